"""Decision layers of the STDP / R-STDP zoo: the R-STDP decision (`DecisionSpec`,
`DecisionLayer`), the `Prediction` every model returns, and the class scores and reward signal
the decision layers share (majority heads and deepr's chain build on them, `models.heads`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from spiking import functional as sf
from spiking import parallel
from spiking import times as st
from spiking.remember import remembered
from spiking.layers import Convolution
from spiking.learning import RSTDP, STDP
from spiking.sequential import reinforce_sequential_, teacher_picks
from spiking.settings import MAX_COUNT, setting, settings
from utils import derived_seed

from .layers import (MAX_KERNEL, WEIGHT_MEAN, WEIGHT_STD, check_input_maps, check_rule, conv_size,
                     fitting_pad)

# Mozafari et al. 2018's R-STDP rates and weight bounds
REWARD_RATES, PUNISH_RATES = (0.004, -0.003), (-0.004, 0.0005)
DECISION_BOUNDS = (0.2, 0.8)


@settings
class DecisionSpec:
    """A decision layer: zero-pad by `pad` -> conv with `neurons_per_class * classes` maps ->
    the neuron with the largest final potential decides (`fire` without threshold, one winner);
    trained by R-STDP (a reward and a punish rule). `dropout` p > 0: in every training epoch
    each decision neuron (feature) is left out with probability p (a fresh seeded draw per
    epoch): it cannot win, so it neither decides nor learns, as if its weights were zero
    (Mozafari et al. 2018's dropout, which mozafari2018_shallow uses); evaluation uses all.

    `averaged`: training is unchanged, but the layer predicts (validation, test, inference) with
    its kernels averaged over the training epoch's adaptive-rate windows: the weights at the end
    of each window (about 1,000 samples, independent of the batch size), summed, divided by
    their count (the averaged perceptron of Freund & Schapire 1999; one winner's R-STDP is a
    perceptron-like rule). Before the first epoch ends it predicts with the weights as they are.

    `teacher` t > 0 (an option; SpykeTorch's R-STDP is t = 0): a wrong decision also rewards
    the label class's neuron with the largest final potential (spiking or not), at its
    position, with the reward rule's base rates times t times the punish rules' adaptive scale
    (`hit * adaptive_int + adaptive_min`: the teacher acts on misses, as punishment does). The
    winner is pushed away and the right class pulled closer, as a multi-class perceptron
    updates both on a mistake; plain R-STDP, once the hit rate is high, learns almost only by
    punishment (its reward rates scale with the miss rate)."""
    in_channels: int = setting(1, low=1, high=MAX_COUNT)
    kernel_size: int = setting(1, low=1, high=MAX_KERNEL)
    neurons_per_class: int = setting(20, low=1, high=MAX_COUNT)
    pad: int = setting(0, low=0, high=MAX_KERNEL)
    reward: tuple = REWARD_RATES
    punish: tuple = PUNISH_RATES
    use_stabilizer: bool = False
    lower_bound: float = DECISION_BOUNDS[0]
    upper_bound: float = DECISION_BOUNDS[1]
    weight_mean: float = WEIGHT_MEAN
    weight_std: float = setting(WEIGHT_STD, low=0)
    dropout: float = setting(0.0, low=0, high=1)
    averaged: bool = setting(False, absent=False)     # runs before it existed: predicted with the weights
    teacher: float = setting(0.0, low=0, absent=0.0)     # runs before it existed: SpykeTorch's R-STDP

    def check(self) -> None:
        check_rule(self.reward, "reward", self.lower_bound, self.upper_bound)
        check_rule(self.punish, "punish", self.lower_bound, self.upper_bound)


def draw_dropout(count: int, p: float, seed: int, *labels) -> torch.Tensor:
    """Which of `count` features an epoch leaves out: each independently with probability `p`,
    drawn from `derived_seed(seed, *labels)` (the same on every rank). Bool [count]."""
    generator = torch.Generator().manual_seed(derived_seed(seed, *labels))
    return torch.rand(count, generator=generator) < p


@dataclass
class Prediction:
    """classes [B] (-1 = silence), scores [B, num_classes] (higher = more that class; for ROC AUC),
    winners [B, 1, 3] (feature, row, col of the deciding neuron, -1 when silent)."""
    classes: torch.Tensor
    scores: torch.Tensor
    winners: torch.Tensor


def class_margins(potentials: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class scores of a decision layer: each class's largest final potential minus the largest
    of the other classes (positive only for the winning class). Raw potentials grow with the
    input's spike count, so they rank poorly across samples; margins are comparable (ROC AUC).

    Shape: potentials [B, classes * neurons_per_class, H, W] -> [B, classes].
    """
    per_class = potentials.shape[1:].numel() // num_classes
    best = potentials.reshape(potentials.shape[0], num_classes, per_class).amax(dim=2)
    if num_classes == 1:
        return best
    top = best.topk(2, dim=1).values
    leader = best.argmax(dim=1, keepdim=True)
    others = torch.where(torch.arange(num_classes, device=best.device) == leader,
                         top[:, 1:2], top[:, :1])
    return best - others


def reward_signal(decisions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """+1 for a correct decision, -1 for a wrong one, 0 for silence (-1)."""
    labels = labels.to(decisions.device)
    return torch.where(decisions < 0, 0, torch.where(decisions == labels, 1, -1))


class DecisionLayer(nn.Module):
    """`DecisionSpec` as a head, reading final maps [B, C, H, W]."""
    needs = "final"

    def __init__(self, spec: DecisionSpec, num_classes: int, time_steps: int, name: str = "decision",
                 setting: str | None = None):
        super().__init__()
        self.spec, self.num_classes, self.time_steps, self.name = spec, num_classes, time_steps, name
        self.setting = setting or name      # the config group that sets it (for error messages)
        self.conv = Convolution(spec.in_channels, spec.neurons_per_class * num_classes,
                                spec.kernel_size, spec.weight_mean, spec.weight_std)
        self.rstdp = RSTDP(STDP(self.conv, spec.reward, spec.use_stabilizer, spec.lower_bound, spec.upper_bound),
                           STDP(self.conv, spec.punish, spec.use_stabilizer, spec.lower_bound, spec.upper_bound))
        if spec.dropout > 0:
            # the neurons this training epoch leaves out (`start_epoch`); absent without dropout
            self.register_buffer("dropped", torch.zeros(self.conv.out_channels, dtype=torch.bool))
        if spec.averaged:
            # the sum of the kernels at the ends of this epoch's adaptive-rate windows, and how
            # many (float64: the mean does not depend on the summation's rounding)
            self.register_buffer("average_sum", torch.zeros(self.conv.weight.shape, dtype=torch.float64))
            self.register_buffer("average_count", torch.zeros((), dtype=torch.long))
        if spec.teacher > 0:
            # the punish rules' adaptive scale, which the teacher's rates follow (`adapt`)
            self.register_buffer("teacher_scale", torch.ones((), dtype=torch.float64))

    def start_epoch(self, epoch: int, seed: int) -> None:
        """Draw this training epoch's dropped neurons (with `spec.dropout` > 0); restart the
        average (with `spec.averaged`)."""
        if self.spec.dropout > 0:
            self.dropped.copy_(draw_dropout(len(self.dropped), self.spec.dropout, seed, "dropout", self.name, epoch))
        if self.spec.averaged:
            self.average_sum.zero_()
            self.average_count.zero_()

    def evaluation_weight(self) -> torch.Tensor:
        """The kernels the layer predicts with: the epoch's average with `spec.averaged` (once a
        window has ended), else the weights themselves. [F, C, kh, kw]

        The average is remembered on the sum until the sum or the count changes
        (`spiking.remember`): recomputing it for every evaluation batch cost deeper2024's
        decision 15 ms a batch of 128, and one tensor lets `sf.conv2d` keep its float64 matrix."""
        if self.spec.averaged and int(self.average_count) > 0:
            dtype = self.conv.weight.dtype
            return remembered(self.average_sum, "_average", (self.average_count._version, dtype),
                              lambda: (self.average_sum / self.average_count).to(dtype))
        return self.conv.weight

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint written without averaging: no average yet (predict with the weights)
        if self.spec.averaged and prefix + "average_sum" not in state_dict:
            state_dict = dict(state_dict)
            state_dict[prefix + "average_sum"] = torch.zeros_like(self.average_sum)
            state_dict[prefix + "average_count"] = torch.zeros_like(self.average_count)
        if self.spec.teacher > 0 and prefix + "teacher_scale" not in state_dict:
            # trained without the teacher: its rates follow the saved punish rates' scale
            state_dict = dict(state_dict)
            state_dict[prefix + "teacher_scale"] = self.punish_scale(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _allowed(self) -> torch.Tensor | None:
        """The neurons that may win while training [F] (None: all)."""
        dropped = getattr(self, "dropped", None)
        return None if dropped is None or not bool(dropped.any()) else ~dropped

    def punish_scale(self, state_dict: dict, prefix: str) -> torch.Tensor:
        """The adaptive scale of the punish rates saved in `state_dict` (1 where unknown)."""
        rate = state_dict.get(prefix + "rstdp.punish.a_plus")
        base = state_dict.get(prefix + "rstdp.base_punish")
        if rate is None or base is None or float(base[0, 0]) == 0:
            return torch.ones((), dtype=torch.float64)
        return (rate[0].double() / base[0, 0].double()).reshape(())

    def teacher_rates(self) -> torch.Tensor | None:
        """The teacher's rates now, [2, F] (a_plus, a_minus), or None without it."""
        if self.spec.teacher <= 0:
            return None
        return (self.rstdp.base_reward.double() * (self.spec.teacher * self.teacher_scale)).float()

    def padding(self, shape) -> tuple[int, int]:
        """The zero padding (rows, cols) on each side of an input map [..., H, W]: `spec.pad`,
        plus ceil((k - size) / 2) where the padded map is still smaller than the kernel k. A
        decision sized to read the whole map at one position (mozafari2018's k4 over MNIST's
        4 x 4) then reads smaller maps (smaller images) whole too: the missing rows and columns
        never spike, as mozafari2018_shallow pads its maps. Maps that fit are unchanged."""
        k, pad = self.spec.kernel_size, self.spec.pad
        rows, cols = tuple(shape)[-2:]
        return pad + fitting_pad(k, rows + 2 * pad), pad + fitting_pad(k, cols + 2 * pad)

    def potentials(self, final: torch.Tensor):
        """(the padded input, for the R-STDP receptive fields; final potentials [B, F, h, w])."""
        rows, cols = self.padding(final.shape)
        return (F.pad(final, (cols, cols, rows, rows)),
                sf.conv2d(final, self.conv.weight, padding=(rows, cols)))

    def decide(self, potentials: torch.Tensor, training: bool = False) -> Prediction:
        """The decision on final potentials [B, F, h, w]; `training`: without this epoch's
        dropped neurons (their potentials count as 0, as zero weights would give)."""
        allowed = self._allowed() if training else None
        if allowed is not None:
            potentials = potentials * allowed.view(1, -1, 1, 1)
        winners = sf.select_winners(st.decision_scores(potentials, self.time_steps), 1, 0)
        feature = winners[:, 0, 0]
        classes = torch.where(feature >= 0, feature // self.spec.neurons_per_class, feature)
        return Prediction(classes, class_margins(potentials, self.num_classes), winners)

    def predict(self, final: torch.Tensor) -> Prediction:
        return self.decide(sf.conv2d(final, self.evaluation_weight(), padding=self.padding(final.shape)))

    @torch.no_grad()
    def reinforce(self, final: torch.Tensor, labels: torch.Tensor, phase: int = 0,
                  exact: bool = True) -> torch.Tensor:
        """One R-STDP step: reward correct decisions, punish wrong ones, skip silent ones.

        The output spikes only at the last step, so every input that spiked at all pairs
        (`pre >= post = 1`); the final map is the pre count. `exact`: sample after sample
        (`spiking.sequential.reinforce_sequential_`); otherwise all samples decide with the
        batch's starting weights and their updates are summed (with `spec.teacher`, the
        teacher's summed updates follow, picked on the same potentials). Returns the
        decisions [B]."""
        if exact:
            return self.reinforce_exact(final, labels).classes
        padded, potentials = self.potentials(final)
        prediction = self.decide(potentials, training=True)
        reward = reward_signal(prediction.classes, labels)
        self.learn_from(padded, prediction, reward)
        self._teach_summed(padded, potentials, labels.to(reward.device), reward)
        return prediction.classes

    def _teach_summed(self, padded: torch.Tensor, potentials: torch.Tensor, labels: torch.Tensor,
                      reward: torch.Tensor) -> None:
        """Summed mode's teacher (`spec.teacher`): the punished samples' label-class picks on the
        batch's potentials [B, F, h, w], their reward-rule updates summed in one step."""
        teacher, missed = self.teacher_rates(), (reward < 0).nonzero().flatten()
        if teacher is None or not len(missed):
            return
        cells, width = potentials.shape[2] * potentials.shape[3], potentials.shape[3]
        allowed = self._allowed()
        picks = teacher_picks(potentials[missed].flatten(1), labels[missed], self.feature_class(), cells,
                              None if allowed is None else allowed.repeat_interleave(cells))
        missed, picks = missed[picks >= 0], picks[picks >= 0]
        winners = torch.stack((picks // cells, picks % cells // width, picks % cells % width), 1).unsqueeze(1)
        rows = teacher[:, winners[:, 0, 0]]          # [2, M]: each pick's own feature's rates
        plus, minus = (row.unsqueeze(1).expand(-1, self.conv.out_channels) for row in rows)
        post = torch.ones(len(missed), 1, device=padded.device)
        self.rstdp.reward.update(padded[missed], post, winners, "sum", plus, minus)

    @torch.no_grad()
    def reinforce_exact(self, final: torch.Tensor, labels: torch.Tensor) -> Prediction:
        """The sequential R-STDP step; returns each sample's decision as it was made."""
        with parallel.summed_change(self.conv.weight, self.spec.lower_bound, self.spec.upper_bound):
            winners, potentials = reinforce_sequential_(self.rstdp, final, labels, self.feature_class(),
                                                        self.time_steps, self.padding(final.shape), self._allowed(),
                                                        self.teacher_rates())
        feature = winners[:, 0, 0]
        classes = torch.where(feature >= 0, feature // self.spec.neurons_per_class, feature)
        return Prediction(classes, class_margins(potentials, self.num_classes), winners)

    def feature_class(self) -> torch.Tensor:
        """The class of every decision feature [F]."""
        return torch.arange(self.conv.out_channels, device=self.conv.weight.device) // self.spec.neurons_per_class

    def learn_from(self, padded: torch.Tensor, prediction: Prediction, reward: torch.Tensor) -> None:
        post = torch.ones(padded.shape[0], 1, device=padded.device)
        self.rstdp.update(padded, post, prediction.winners, reward)

    def adapt(self, hit: float, miss: float, adaptive_min: float, adaptive_int: float) -> None:
        """The end of an adaptive-rate window: new rates from its hit and miss fractions; with
        `spec.averaged`, the kernels join the epoch's average."""
        self.rstdp.adapt(hit, miss, adaptive_min, adaptive_int)
        if self.spec.teacher > 0:
            self.teacher_scale.fill_(hit * adaptive_int + adaptive_min)
        if self.spec.averaged:
            self.average_sum += self.conv.weight
            self.average_count += 1

    def rates(self) -> dict:
        return {"reward_a_plus": float(self.rstdp.reward.a_plus[0]),
                "punish_a_plus": float(self.rstdp.punish.a_plus[0])}

    def stdp_layers(self) -> list:
        return []

    def macs(self, shape) -> int:
        _, height, width = self.output_shape(shape)
        return self.conv.weight.numel() * height * width

    def output_shape(self, shape):
        check_input_maps(self.name, self.setting, self.spec.in_channels, shape)
        return (self.conv.out_channels,) + tuple(conv_size(s, p, self.spec.kernel_size)
                                                 for s, p in zip(shape[1:], self.padding(shape)))
