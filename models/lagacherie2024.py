"""Lagacherie (2024): a Hebbian spiking layer, in a faithful and a usable mode, with a readout.

Faithful mode (`mode="faithful"`), the article's class exactly (vectorised over neurons and
inputs): weights W [in, out] ~ N(0, 1), threshold 0.6, state s [out] ~ N(0, 1) at construction
and never reset (`persist_state`); one call per image, x = pixel / 255:
    s <- 0.5 s + x W;  k = 1[s >= 0.6];  s <- s - s k;
    W[:, n] += 0.05 * (2 * 1[x > 0.6] - 1)   for every neuron n that spiked.
The state is carried from sample to sample, so this mode is sequential by nature (a batch is
processed one sample after the other). Its documented pathologies are tests: it falls silent on
sparse input (background pixels are depressed at every spike) and runs away on dense input.
Spikes are float, so layers could be stacked.

Usable mode (default): Bernoulli rate coding (p = rate * pixel / 255 per step, T steps, state
reset per sample), leaky integration s <- decay * s + x_t W, k-winners-take-all among the
neurons above their own threshold, reset of the winners, and after each batch the Hebbian
update W += eta * mean_b sum_t post_t^T (x_t - c) with c the running mean input rate (so
potentiation and depression balance whatever the input sparsity), weights clamped to [0, 1]
and each neuron's incoming weights rescaled to a fixed L1 norm; adaptive thresholds
theta_n += alpha * (spikes_n - target) keep every neuron in use.

Readout (both modes): a linear classifier (logistic by default) on the spike counts per image,
C chosen on the validation split; an image without any spike is silent. Controls, with the same
readout: `learn=False` (random frozen weights) and `features="pixels"` (raw pixels).
"""
from __future__ import annotations

import dataclasses

import torch

from frontends import PixelInput
from utils import derived_seed

from spiking.rules import centred_hebbian_sum, normalized_hebbian_weights, sign_hebbian_delta
from spiking.settings import MAX_COUNT, setting, settings

from ._registry import register_model
from .base import NetworkModel
from .decision import Prediction
from .readout import LinearReadout, ReadoutStage
from .stages import LearnerStage


@settings
class Lagacherie2024Config:
    frontend: PixelInput = PixelInput()
    mode: str = "usable"
    features: str = "spikes"
    learn: bool = True
    neurons: int = setting(100, low=1, high=MAX_COUNT)
    # faithful mode (the article's constants)
    threshold: float = setting(0.6, low=0)
    step_size: float = setting(0.05, low=0)
    persist_state: bool = True
    # usable mode
    time_steps: int = setting(30, low=1, high=MAX_COUNT)
    rate: float = setting(0.3, low=0, high=1)
    decay: float = setting(0.8, low=0, high=1)
    kwta: int = setting(1, low=1, high=MAX_COUNT)
    learning_rate: float = setting(0.002, low=0)
    weight_norm: float = setting(40.0, above=0)
    initial_threshold: float = setting(1.0, low=0)
    threshold_rate: float = setting(0.5, low=0)
    readout: str = "logistic"
    readout_C: float | None = setting(None, above=0)
    default_epochs: tuple = (1, 1)
    default_batch_size: int = setting(32, low=1)


class HebbianLayer(torch.nn.Module):
    """The Hebbian layer in either mode (see the module docstring)."""

    def __init__(self, inputs: int, config: Lagacherie2024Config):
        super().__init__()
        self.config = config
        out = config.neurons
        if config.mode == "faithful":
            weight, state = torch.randn(inputs, out), torch.randn(out)
        else:
            weight = torch.rand(inputs, out)
            weight = weight / weight.sum(dim=0, keepdim=True) * config.weight_norm
            state = torch.zeros(out)
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.register_buffer("state", state)                     # faithful mode's carried state
        self.register_buffer("thresholds", torch.full((out,), config.initial_threshold))
        self.register_buffer("mean_input", torch.zeros(inputs))  # running mean input rate (usable)
        self.register_buffer("samples_seen", torch.zeros((), dtype=torch.long))

    # ---- faithful mode
    @torch.no_grad()
    def faithful_step(self, x: torch.Tensor, state: torch.Tensor, learn: bool):
        """One call of the article's layer on one input [in]: returns (spikes [out], state)."""
        state = 0.5 * state + x @ self.weight
        spikes = (state >= self.config.threshold).to(x.dtype)
        state = state - state * spikes
        if learn:
            self.weight += sign_hebbian_delta(x, spikes, self.config.threshold, self.config.step_size)
        return spikes, state

    # ---- usable mode
    @torch.no_grad()
    def run(self, x: torch.Tensor, generator: torch.Generator, learn: bool) -> torch.Tensor:
        """Spike counts [B, out] of images x [B, in] in [0, 1]; with `learn`, one Hebbian update."""
        config = self.config
        batch = x.shape[0]
        state = x.new_zeros(batch, config.neurons)
        counts = torch.zeros_like(state)
        hebbian = torch.zeros_like(self.weight)
        for _ in range(config.time_steps):
            pre = (torch.rand(x.shape, generator=generator).to(x.device) < config.rate * x).to(x.dtype)
            state = config.decay * state + pre @ self.weight
            above = state - self.thresholds
            post = _top_k_above(above, config.kwta)
            state = state * (1 - post)
            counts += post
            if learn:
                hebbian += centred_hebbian_sum(pre, post, self.mean_input)
                self.mean_input.mul_(0.999).add_(0.001 * pre.mean(dim=0))
        if learn:
            self.weight.copy_(normalized_hebbian_weights(self.weight, hebbian, batch, config.learning_rate,
                                                         config.weight_norm))
            target = config.time_steps * config.kwta / config.neurons
            self.thresholds += config.threshold_rate * (counts.mean(dim=0) - target)
            self.samples_seen += batch
        return counts


def _top_k_above(above: torch.Tensor, k: int) -> torch.Tensor:
    """1 for the k largest positive entries of each row ([B, N]), 0 elsewhere."""
    k = min(k, above.shape[1])
    values, index = above.topk(k, dim=1)
    post = torch.zeros_like(above)
    post.scatter_(1, index, (values > 0).to(above.dtype))
    return post


class Lagacherie2024(NetworkModel):
    predict_needs = "times"

    def __init__(self, config: Lagacherie2024Config = Lagacherie2024Config(), num_classes: int = 10,
                 inputs: int = 784):
        super().__init__(config, config.frontend, num_classes)
        if config.mode not in ("faithful", "usable") or config.features not in ("spikes", "pixels"):
            raise ValueError("mode must be 'faithful' or 'usable' and features 'spikes' or 'pixels'")
        self.inputs = inputs
        self.time_steps = 1 if config.mode == "faithful" else config.time_steps
        self.layer = HebbianLayer(inputs, config)
        self.readout_head = LinearReadout(config.readout, num_classes, config.readout_C)
        self.readout = {"readout": config.readout, "readout_C": config.readout_C}
        self._generator = None

    def build_stages(self):
        stages = []
        if self.config.learn and self.config.features == "spikes":
            stages.append(LearnerStage("hebbian", "hebbian", self, supervised=False))
        stages.append(ReadoutStage(f"readout_{self.config.readout}", self.readout_head, input_node=1))
        return tuple(stages)

    def generator(self, purpose, index=0) -> torch.Generator:
        return torch.Generator().manual_seed(derived_seed(self.base_seed, purpose, index))

    def start_evaluation(self, split: str) -> None:
        self._generator = self.generator("features", split)

    # ---- the Hebbian stage's learner
    def start_epoch(self, epoch: int) -> None:
        self._train_generator = self.generator("train", epoch)

    def train_batch(self, inputs: torch.Tensor, labels=None):
        x = inputs.flatten(1).float() / 255.0
        if self.config.mode == "usable":
            self.layer.run(x, self._train_generator, learn=True)
            return None
        state = self.layer.state if self.config.persist_state else None
        for sample in x:        # the faithful rule carries its state from sample to sample
            if state is None:
                state = torch.zeros_like(self.layer.state)
            _, state = self.layer.faithful_step(sample, state, learn=True)
            if not self.config.persist_state:
                state = None
        if state is not None:
            self.layer.state.copy_(state)
        self.layer.samples_seen += len(x)
        return None

    def rates(self) -> dict:
        weight = self.layer.weight
        return {"weight_min": float(weight.min()), "weight_max": float(weight.max())}

    # ---- features and predictions
    @torch.no_grad()
    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        """Spike counts [B, neurons] (faithful: one call from a zero state), or the pixels
        (0..255). `inputs` are the pixels [B, 784] as encoded (uint8 values)."""
        if self.config.features == "pixels":
            return inputs.flatten(1).float()
        x = inputs.flatten(1).float() / 255.0
        if self.config.mode == "faithful":
            state = x.new_zeros(x.shape[0], self.config.neurons)
            return ((0.5 * state + x @ self.layer.weight) >= self.config.threshold).float()
        if self._generator is None:
            self.start_evaluation("default")
        return self.layer.run(x, self._generator, learn=False)

    def forward_final(self, final: torch.Tensor, start: int = 0, stop: int | None = None):
        return self.features(final) if start == 0 and stop == 1 else final

    forward_times = forward_final

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, start: int = 0, final: bool = False) -> Prediction:
        features = self.features(inputs) if start == 0 else inputs.float()
        return self.readout_head.predict(features)

    def node_shapes(self, input_shape) -> list:
        if int(torch.tensor(input_shape).prod()) != self.inputs:
            raise ValueError(f"the layer takes {self.inputs} inputs, the data gives {input_shape}")
        width = self.inputs if self.config.features == "pixels" else self.config.neurons
        return [tuple(input_shape), (width,), (self.num_classes,)]

    def inference_macs(self, input_shape) -> int:
        return self.inputs * self.config.neurons * self.time_steps

    def feature_images(self) -> dict:
        side = int(round(self.inputs ** 0.5))
        if side * side != self.inputs or self.config.features == "pixels":
            return {}
        return {"hebbian": self.layer.weight.t().reshape(-1, side, side).cpu().numpy()}


def _factory(**defaults):
    def build(num_classes: int = 10, **overrides) -> Lagacherie2024:
        return Lagacherie2024(dataclasses.replace(Lagacherie2024Config(**defaults), **overrides), num_classes)
    return build


@register_model
def lagacherie2024(num_classes: int = 10, **overrides) -> Lagacherie2024:
    """Lagacherie 2024: Hebbian spiking layer (usable mode: rates, k-WTA, bounds) + logistic readout."""
    return _factory()(num_classes, **overrides)


@register_model
def lagacherie2024_random(num_classes: int = 10, **overrides) -> Lagacherie2024:
    """Control: lagacherie2024's readout on the layer's random, frozen (unlearned) weights."""
    return _factory(learn=False, default_epochs=(1,))(num_classes, **overrides)


@register_model
def lagacherie2024_pixels(num_classes: int = 10, **overrides) -> Lagacherie2024:
    """Control: lagacherie2024's readout on the raw pixels."""
    return _factory(features="pixels", default_epochs=(1,))(num_classes, **overrides)
