"""Building blocks of the STDP / R-STDP zoo and the stage objects the trainer runs.

A model is a chain of blocks. Node `k` is the input of block `k` (node 0 is the front end's
output), held as first-spike times `uint8 [B, C, H, W]` (`T` = never) or, where only "spiked at
all" matters, as the final map of the cumulative wave (`{0, 1}`). Weights stay non-negative
(every rule clamps to bounds >= 0), so potentials never decrease in time and:

- inference needs one convolution per layer on final maps (`forward_final`, `predict`);
- hidden-layer STDP needs spike times, but only of the layer being trained (`HiddenLayer.learn`);
- the trainer caches node tensors, so stage k only pays for stage k's arithmetic.

Models and stages never touch the filesystem, stdout or TensorBoard.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from s1c1 import FrontEnd
from spiking import functional as sf
from spiking import times as st
from spiking.layers import Convolution
from spiking.learning import RSTDP, STDP

# the zoo's shared constants (Mozafari et al. 2018/2019, SpykeTorch's MozafariDeep)
WEIGHT_MEAN, WEIGHT_STD = 0.8, 0.05
STDP_RATES = (0.004, -0.003)
REWARD_RATES, PUNISH_RATES = (0.004, -0.003), (-0.004, 0.0005)
DECISION_BOUNDS = (0.2, 0.8)
RATE_DOUBLING_EVERY, MAX_A_PLUS, A_MINUS_RATIO = 500, 0.15, -0.75
ADAPTIVE_WINDOW = 1000
POTENTIAL_BUDGET = 1 << 26      # float elements of potentials held at once by a full temporal pass


@dataclass(frozen=True, kw_only=True)
class HiddenSpec:
    """A hidden layer: zero-pad the input by `pad` -> conv -> fire(threshold) -> max-pool.

    Learning (STDP stage): pointwise inhibition -> k winners (`kwta`, `inhibition_radius`) ->
    STDP with `learning_rate`; every `rate_doubling_every` samples `a_plus` doubles (capped at
    `max_a_plus`) and `a_minus = a_minus_ratio * a_plus` (0 disables the schedule).
    """
    in_channels: int
    out_channels: int
    kernel_size: int
    threshold: float
    kwta: int
    inhibition_radius: int
    pad: int = 0
    pool: int = 1
    pool_stride: int | None = None
    pool_padding: int = 0
    learning_rate: tuple = STDP_RATES
    use_stabilizer: bool = True
    lower_bound: float = 0.0
    upper_bound: float = 1.0
    rate_doubling_every: int = RATE_DOUBLING_EVERY
    max_a_plus: float = MAX_A_PLUS
    a_minus_ratio: float = A_MINUS_RATIO
    weight_mean: float = WEIGHT_MEAN
    weight_std: float = WEIGHT_STD


@dataclass(frozen=True, kw_only=True)
class DecisionSpec:
    """A decision layer: zero-pad by `pad` -> conv with `neurons_per_class * classes` maps ->
    the neuron with the largest final potential decides (`fire` without threshold, one winner);
    trained by R-STDP (a reward and a punish rule)."""
    in_channels: int
    kernel_size: int
    neurons_per_class: int = 20
    pad: int = 0
    reward: tuple = REWARD_RATES
    punish: tuple = PUNISH_RATES
    use_stabilizer: bool = False
    lower_bound: float = DECISION_BOUNDS[0]
    upper_bound: float = DECISION_BOUNDS[1]
    weight_mean: float = WEIGHT_MEAN
    weight_std: float = WEIGHT_STD


def _pad4(pad: int) -> tuple[int, int, int, int]:
    return (pad, pad, pad, pad)


def _chunk(batch: int, features: int, height: int, width: int, steps: int) -> int:
    return max(1, min(steps, POTENTIAL_BUDGET // max(1, batch * features * height * width)))


class HiddenLayer(nn.Module):
    """`HiddenSpec` as a module. Node shapes: times [B, C, H, W] -> pooled times [B, F, H'', W'']."""

    def __init__(self, spec: HiddenSpec, time_steps: int):
        super().__init__()
        self.spec = spec
        self.time_steps = time_steps
        self.conv = Convolution(spec.in_channels, spec.out_channels, spec.kernel_size,
                                spec.weight_mean, spec.weight_std)
        self.stdp = STDP(self.conv, spec.learning_rate, spec.use_stabilizer,
                         spec.lower_bound, spec.upper_bound)
        # samples this layer has learned from (drives the rate-doubling schedule; resumable)
        self.register_buffer("samples_seen", torch.zeros((), dtype=torch.long))

    # ---- forward
    def _pool_times(self, times):
        if self.spec.pool <= 1:
            return times
        return st.pool_times(times, self.spec.pool, self.spec.pool_stride, self.spec.pool_padding)

    def fire_times(self, times: torch.Tensor) -> torch.Tensor:
        """Un-pooled spike times of every neuron of the conv layer (the direct per-step path)."""
        padded = st.pad_times(times, _pad4(self.spec.pad), self.time_steps)
        h, w = (s - self.spec.kernel_size + 1 for s in padded.shape[-2:])
        chunk = _chunk(times.shape[0], self.spec.out_channels, h, w, self.time_steps)
        return st.conv_fire_times(padded, self.conv.weight, self.spec.threshold, self.time_steps,
                                  chunk, values=False)[0]

    def forward_times(self, times: torch.Tensor) -> torch.Tensor:
        return self._pool_times(self.fire_times(times))

    def forward_final(self, final: torch.Tensor) -> torch.Tensor:
        potentials = sf.conv2d(F.pad(final, _pad4(self.spec.pad)), self.conv.weight)
        spiked = (potentials > self.spec.threshold).to(final.dtype)
        if self.spec.pool <= 1:
            return spiked
        return F.max_pool2d(spiked, self.spec.pool, self.spec.pool_stride or self.spec.pool,
                            self.spec.pool_padding)

    # ---- STDP
    def limit(self) -> int:
        """How many samples the next `learn` call may take without straddling a rate change."""
        every = self.spec.rate_doubling_every
        if every <= 0:
            return 1 << 30
        upcoming = int(self.samples_seen) + 1
        return every if upcoming % every == 0 else every - upcoming % every

    @torch.no_grad()
    def _schedule(self) -> None:
        every = self.spec.rate_doubling_every
        if every > 0 and (int(self.samples_seen) + 1) % every == 0:
            # a_plus from feature 0's current rate, in float32 as the original
            a_plus = torch.minimum(self.stdp.a_plus[0] * 2, torch.tensor(self.spec.max_a_plus))
            a_minus = a_plus * self.spec.a_minus_ratio
            self.stdp.update_all_learning_rate(a_plus.item(), a_minus.item())

    @torch.no_grad()
    def learn(self, times: torch.Tensor) -> dict:
        """One batched STDP step on input spike times [B, C, H, W]; returns batch statistics.

        Conv + fire + pointwise inhibition come from `earliest_spikes` (bisection in time per
        position), then k-WTA on the survivors and the summed STDP update."""
        batch = times.shape[0]
        if batch > self.limit():
            raise ValueError(f"batch of {batch} straddles a learning-rate change; take <= {self.limit()}")
        self._schedule()
        steps = self.time_steps
        padded = st.pad_times(times, _pad4(self.spec.pad), steps)
        survivors = st.earliest_spikes(padded, self.conv.weight, self.spec.threshold, steps)
        winners = st.survivor_winners(survivors, self.spec.kwta, self.spec.inhibition_radius)
        _, r, c = winners.clamp(min=0).unbind(-1)
        b = torch.arange(batch, device=times.device).unsqueeze(1)
        post = (steps - survivors.times[b, r, c]).float()            # winners' spiking steps
        self.stdp.update(steps - padded.float(), post, winners)       # pre: inputs' spiking steps
        self.samples_seen += batch
        return {"winners": (winners[..., 0] >= 0).sum()}

    def rates(self) -> dict:
        return {"a_plus": float(self.stdp.a_plus[0]), "a_minus": float(self.stdp.a_minus[0])}

    def output_shape(self, shape):
        channels, height, width = shape
        height, width = (s + 2 * self.spec.pad - self.spec.kernel_size + 1 for s in (height, width))
        if self.spec.pool > 1:
            stride = self.spec.pool_stride or self.spec.pool
            height, width = ((s + 2 * self.spec.pool_padding - self.spec.pool) // stride + 1
                             for s in (height, width))
        return (self.spec.out_channels, height, width)


@dataclass
class Prediction:
    """classes [B] (-1 = silence), scores [B, num_classes] (largest final potential per class),
    winners [B, 1, 3] (feature, row, col of the deciding neuron, -1 when silent)."""
    classes: torch.Tensor
    scores: torch.Tensor
    winners: torch.Tensor


class DecisionLayer(nn.Module):
    """`DecisionSpec` as a module, reading final maps [B, C, H, W]."""

    def __init__(self, spec: DecisionSpec, num_classes: int, time_steps: int):
        super().__init__()
        self.spec = spec
        self.num_classes = num_classes
        self.time_steps = time_steps
        self.conv = Convolution(spec.in_channels, spec.neurons_per_class * num_classes,
                                spec.kernel_size, spec.weight_mean, spec.weight_std)
        self.rstdp = RSTDP(STDP(self.conv, spec.reward, spec.use_stabilizer, spec.lower_bound, spec.upper_bound),
                           STDP(self.conv, spec.punish, spec.use_stabilizer, spec.lower_bound, spec.upper_bound))

    def potentials(self, final: torch.Tensor):
        padded = F.pad(final, _pad4(self.spec.pad))
        return padded, sf.conv2d(padded, self.conv.weight)

    def decide(self, potentials: torch.Tensor) -> Prediction:
        winners = sf.select_winners(st.decision_scores(potentials, self.time_steps), 1, 0)
        feature = winners[:, 0, 0]
        classes = torch.where(feature >= 0, feature // self.spec.neurons_per_class, feature)
        scores = potentials.flatten(2).view(potentials.shape[0], self.num_classes, -1).amax(dim=2)
        return Prediction(classes, scores, winners)

    def predict(self, final: torch.Tensor) -> Prediction:
        return self.decide(self.potentials(final)[1])

    @torch.no_grad()
    def reinforce(self, final: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One R-STDP step: reward correct decisions, punish wrong ones, skip silent ones.

        The output spikes only at the last step, so every input that spiked at all pairs
        (`pre >= post = 1`); the final map is the pre count. Returns the decisions [B]."""
        padded, potentials = self.potentials(final)
        prediction = self.decide(potentials)
        reward = reward_signal(prediction.classes, labels)
        post = torch.ones(final.shape[0], 1, device=final.device)
        self.rstdp.update(padded, post, prediction.winners, reward)
        return prediction.classes

    def adapt(self, hit: float, miss: float, adaptive_min: float, adaptive_int: float) -> None:
        self.rstdp.adapt(hit, miss, adaptive_min, adaptive_int)

    def rates(self) -> dict:
        return {"reward_a_plus": float(self.rstdp.reward.a_plus[0]),
                "punish_a_plus": float(self.rstdp.punish.a_plus[0])}

    def output_shape(self, shape):
        _, height, width = shape
        return (self.conv.out_channels,) + tuple(s + 2 * self.spec.pad - self.spec.kernel_size + 1
                                                 for s in (height, width))


def reward_signal(decisions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """+1 for a correct decision, -1 for a wrong one, 0 for silence (-1)."""
    labels = labels.to(decisions.device)
    return torch.where(decisions < 0, 0, torch.where(decisions == labels, 1, -1))


# ---------------------------------------------------------------- stages

class STDPStage:
    """Unsupervised STDP of one hidden layer, reading node `input_node` as spike times."""
    kind = "stdp"
    needs = "times"

    def __init__(self, name: str, layer: HiddenLayer, input_node: int):
        self.name, self.layer, self.input_node = name, layer, input_node

    def limit(self) -> int:
        return self.layer.limit()

    def start_epoch(self) -> None:
        pass

    def step(self, times: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        return self.layer.learn(times)

    def end_epoch(self) -> dict:
        return {}

    def rates(self) -> dict:
        return self.layer.rates()


class RSTDPStage:
    """Supervised R-STDP of a decision head, reading node `input_node` as final maps.

    The head's rates adapt after each window of `window` training samples (silent ones
    included; windows restart with every epoch, a shorter last window adapts too):
    reward rates = base * (miss * adaptive_int + adaptive_min), punish rates = base *
    (hit * adaptive_int + adaptive_min). The first window uses the base rates.
    """
    kind = "rstdp"
    needs = "final"

    def __init__(self, name: str, head, input_node: int, window: int = ADAPTIVE_WINDOW,
                 adaptive_min: float = 0.0, adaptive_int: float = 1.0):
        self.name, self.head, self.input_node = name, head, input_node
        self.window, self.adaptive_min, self.adaptive_int = window, adaptive_min, adaptive_int
        self._counts = None

    def start_epoch(self) -> None:
        self._counts = [0, 0, 0]      # correct, wrong, silent in the current window

    def limit(self) -> int:
        return self.window - sum(self._counts)

    def step(self, final: torch.Tensor, labels: torch.Tensor) -> dict:
        decisions = self.head.reinforce(final, labels)
        labels = labels.to(decisions.device)
        silent = int((decisions < 0).sum())
        correct = int((decisions == labels).sum())
        counts = (correct, len(labels) - correct - silent, silent)
        self._counts = [a + b for a, b in zip(self._counts, counts)]
        if sum(self._counts) >= self.window:
            self._adapt()
        return {"correct": counts[0], "wrong": counts[1], "silent": counts[2]}

    def _adapt(self) -> None:
        total = sum(self._counts)
        if total:
            self.head.adapt(self._counts[0] / total, self._counts[1] / total,
                            self.adaptive_min, self.adaptive_int)
        self._counts = [0, 0, 0]

    def end_epoch(self) -> dict:
        self._adapt()
        return {}

    def rates(self) -> dict:
        return self.head.rates()


# ---------------------------------------------------------------- models

class SpikingModel(nn.Module):
    """A chain of blocks ending in a decision head, plus the stages that train it.

    Subclasses build `self.blocks` (hidden blocks, then the head) in `__init__` and return their
    stages from `build_stages`; `config` is a frozen dataclass holding every hyperparameter.
    """

    def __init__(self, config, frontend: FrontEnd, num_classes: int):
        super().__init__()
        self.config = config
        self.frontend = frontend
        self.num_classes = num_classes
        self.time_steps = frontend.time_steps
        self.blocks = nn.ModuleList()
        self.block_names: list[str] = []
        self._stages = None

    def add_block(self, name: str, block: nn.Module) -> nn.Module:
        self.blocks.append(block)
        self.block_names.append(name)
        return block

    @property
    def stages(self) -> tuple:
        if self._stages is None:
            self._stages = tuple(self.build_stages())
        return self._stages

    def build_stages(self):
        raise NotImplementedError

    @property
    def head(self):
        return self.blocks[-1]

    def forward_times(self, times: torch.Tensor, start: int = 0, stop: int | None = None):
        """Exact spike times of node `stop` from spike times of node `start`."""
        for block in self.blocks[start:stop]:
            times = block.forward_times(times)
        return times

    def forward_final(self, final: torch.Tensor, start: int = 0, stop: int | None = None):
        """Final map of node `stop` from the final map of node `start` (one conv per layer)."""
        stop = len(self.blocks) - 1 if stop is None else stop
        for block in self.blocks[start:stop]:
            final = block.forward_final(final)
        return final

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, start: int = 0, final: bool = False) -> Prediction:
        """Decisions from node `start` (spike times, or a final map when `final`)."""
        x = inputs.float() if final else st.final_map(inputs, self.time_steps)
        return self.head.predict(self.forward_final(x, start))

    def forward(self, times: torch.Tensor) -> torch.Tensor:
        """Class decisions [B] (-1 = silence) from front-end spike times [B, C, H, W]."""
        return self.predict(times).classes

    def node_shapes(self, input_shape) -> list:
        shapes = [tuple(input_shape)]
        for block in self.blocks:
            shapes.append(block.output_shape(shapes[-1]))
        return shapes

    def hyperparameters(self) -> dict:
        return dataclasses.asdict(self.config)
