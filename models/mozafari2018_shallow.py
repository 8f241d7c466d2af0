"""mozafari2018_shallow: Mozafari et al. 2018 (TNNLS), "First-spike-based visual categorization
using reward-modulated STDP": one R-STDP layer whose features are assigned to classes.

| node | layer | operation | output |
|---|---|---|---|
| 0 | front end (`frontends.GaborFrontEnd`) | 4 Gabor 5 x 5 (67.5, 112.5, 157.5, 202.5 degrees, absolute), max pool 7 stride 6 (ETH-80, NORB: 5 stride 4), lateral intensity inhibition (0.15, 0.12, 0.1, 0.07, 0.05), latency coding in T steps, pointwise inhibition | 4 x H' x W' |
| 1 | S2 (decision) | (maps smaller than the kernel: zero-padded to it) conv 4 -> 10 features per class, k17, fire > 42; the earliest spike over the whole map (the largest potential among equally early ones) decides its feature's class; no spike: silence; R-STDP on that winner | classes |

Learning: the winner is rewarded (reward rates) when its class is right and punished (punish
rates) otherwise; the rates adapt once per epoch (one adaptive window per epoch: reward x
(miss * 0.8 + 0.2), punish x (hit * 0.8 + 0.2)), the first epoch's as if at chance (hit
1 / classes, miss 1 - 1 / classes); at the start of every epoch each feature is dropped
(silenced for that epoch's training, not for validation or testing) with probability
`dropout`. Weights start at N(0.8, 0.05), stay in [0, 1], and learn with the stabiliser
w (1 - w) (SpykeTorch's STDP defaults).

Presets (the paper's per-dataset settings; `--epochs` counts are maxima, with early stopping):

| preset | data | features / class, kernel, threshold | reward, punish | dropout, T, epochs |
|---|---|---|---|---|
| `mozafari2018_shallow` | Caltech faces / motorbikes (grey, e.g. `--image-size 160x250`) | 10, 17, 42 | (0.005, -0.0025), (-0.005, 0.0005) | 0.5, 15, 400 |
| `mozafari2018_shallow_eth80` | ETH-80 (the paper: leave one object out) | 10, 31, 160 | (0.01, -0.0035), (-0.01, 0.0006) | 0.4, 15, 250 |
| `mozafari2018_shallow_norb` | NORB | 10, 23, 150 | (0.05, -0.003), (-0.05, 0.0005) | 0.5, 100, 800 |

Matched, by reading it, to SpykeTorch's `MozafariShallow.py` (its per-task settings above, the
front end's order and pooling, the padding of small maps, the first epoch's chance rates, the
per-feature dropout draw). Where this tool differs on purpose: the best epoch is chosen and
training stopped on a validation split carved from the training set (the script picks its best
epoch on the test set and stops when any training image is silent); Caltech's 50 / 50 split
and ETH-80's one held-out object per category are the folder's `train/` / `test/` parts, a
seeded split (`--seed`, 80 / 20) or `--holdout-group K` (object K of every category); the
script halves Caltech's images (`--image-size` at half the original size does that here); the
script walks its training images in one fixed random order every epoch, here each epoch draws
its own order (`--seed`).
Not checked against recorded outputs of the script (none were available).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from frontends import GaborFrontEnd
from spiking import parallel
from spiking import times as st
from spiking.settings import MAX_COUNT, setting, settings

from ._registry import register_model
from .family import ConvFamily, FamilyConfig
from .decision import Prediction, draw_dropout, reward_signal
from .layers import HiddenLayer, HiddenSpec, fitting_pad
from .stages import RSTDPStage


@settings
class Shallow2018Config(FamilyConfig):
    frontend: GaborFrontEnd = GaborFrontEnd()
    features_per_class: int = setting(10, low=1, high=MAX_COUNT)
    kernel_size: int = setting(17, low=1, high=MAX_COUNT)
    threshold: float = setting(42.0, low=0)
    reward: tuple = (0.005, -0.0025)
    punish: tuple = (-0.005, 0.0005)
    dropout: float = setting(0.5, low=0, high=1)
    weight_bounds: tuple = (0.0, 1.0)
    adaptive_window: int = setting(1 << 30, low=1)      # one window per epoch
    adaptive_min: float = setting(0.2, low=0)
    adaptive_int: float = setting(0.8, low=0)
    adapt_from_chance: bool = True      # the first epoch's rates as if decisions were at chance
    default_epochs: tuple = (400,)


class FirstSpikeDecision(nn.Module):
    """The S2 layer as a decision head reading spike times [B, C, H, W]: its earliest spike
    decides (`engine.earliest_spikes` + one winner, no inhibition radius: SpykeTorch's
    `get_k_winners(k=1)`), class = feature // features_per_class; trained by R-STDP on that
    winner, with per-epoch feature dropout."""
    needs = "times"

    def __init__(self, layer: HiddenLayer, num_classes: int, features_per_class: int, dropout: float):
        super().__init__()
        self.layer, self.num_classes = layer, num_classes
        self.features_per_class, self.dropout = features_per_class, dropout
        self.name = layer.name
        # features silenced for this epoch's training (drawn by `start_epoch`)
        self.register_buffer("dropped", torch.zeros(layer.spec.out_channels, dtype=torch.bool))

    def start_epoch(self, epoch: int, seed: int) -> None:
        """Draw this epoch's dropped features: each independently with probability `dropout`."""
        self.dropped.copy_(draw_dropout(len(self.dropped), self.dropout, seed, "dropout", epoch))

    def _survivors(self, padded: torch.Tensor, training: bool):
        """The S2 layer's survivors (`HiddenLayer.survivors`); while training, the dropped
        features' weights count as zero, so they never fire."""
        weight = None
        if training and bool(self.dropped.any()):
            weight = self.layer.conv.weight.masked_fill(self.dropped.view(-1, 1, 1, 1), 0.0)
        return self.layer.survivors(padded, weight)

    def padded(self, times: torch.Tensor) -> torch.Tensor:
        """The input zero-padded (never-spiking) on each side by ceil((k - size) / 2) where it is
        smaller than the kernel (k), as MozafariShallow.py pads its C1 maps; else unchanged."""
        padded = self.layer.padded(times)
        rows, cols = (fitting_pad(self.layer.spec.kernel_size, size) for size in padded.shape[-2:])
        if rows or cols:
            padded = st.pad_times(padded, (cols, cols, rows, rows), self.layer.time_steps)
        return padded

    def _winners(self, times: torch.Tensor, training: bool):
        """(winners [B, 1, 3] (k = 1, no radius: SpykeTorch's get_k_winners), their spiking
        steps [B, 1], the padded input)."""
        padded = self.padded(times)
        winners, post = self.layer.pick(self._survivors(padded, training))
        return winners, post, padded

    def _classes(self, winners: torch.Tensor) -> torch.Tensor:
        feature = winners[:, 0, 0]
        return torch.where(feature >= 0, torch.div(feature, self.features_per_class, rounding_mode="floor"), -1)

    @torch.no_grad()
    def predict(self, times: torch.Tensor) -> Prediction:
        """Decisions, and class scores by the decision's own rule: each class's best k-WTA score
        (`spiking.times.winner_scores`: earliest spike first, then its potential) over the
        positions its features win after pointwise inhibition; 0 for a class that never spikes."""
        survivors = self._survivors(self.padded(times), training=False)
        winners, _ = self.layer.pick(survivors)
        position_scores = st.winner_scores(survivors.times, survivors.values, self.layer.time_steps).flatten(1)
        classes = torch.div(survivors.features.flatten(1), self.features_per_class, rounding_mode="floor")
        scores = position_scores.new_zeros(len(times), self.num_classes)
        scores.scatter_reduce_(1, classes.clamp(min=0), torch.where(classes >= 0, position_scores, 0.0), "amax")
        return Prediction(self._classes(winners), scores, winners)

    @torch.no_grad()
    def reinforce(self, times: torch.Tensor, labels: torch.Tensor, phase: int = 0, exact: bool = True):
        """One R-STDP step; `exact`: sample after sample (each sees the previous update)."""
        if exact and times.shape[0] > 1:
            rule = self.layer.rstdp.reward
            with parallel.summed_change(self.layer.conv.weight, rule.lower_bound, rule.upper_bound):
                return torch.cat([self._reinforce(times[b:b + 1], labels[b:b + 1]) for b in range(len(times))])
        return self._reinforce(times, labels)

    def _reinforce(self, times: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        winners, post, padded = self._winners(times, training=True)
        classes = self._classes(winners)
        self.layer.rstdp.update(self.layer.time_steps - padded.float(), post, winners,
                                reward_signal(classes, labels))
        return classes

    def adapt(self, hit, miss, adaptive_min, adaptive_int) -> None:
        self.layer.rstdp.adapt(hit, miss, adaptive_min, adaptive_int)

    def rates(self) -> dict:
        return {"reward_a_plus": float(self.layer.rstdp.reward.a_plus[0]),
                "punish_a_plus": float(self.layer.rstdp.punish.a_plus[0])}

    def stdp_layers(self) -> list:
        return []           # no unsupervised stage: S2 learns by reward only

    def _padded_shape(self, shape):
        """The input shape [C, H, W] after `padded`'s extra padding (before the layer's own)."""
        channels, *sizes = shape
        kernel, pad = self.layer.spec.kernel_size, self.layer.spec.pad
        return (channels, *[size + 2 * -(-max(kernel - size - 2 * pad, 0) // 2) for size in sizes])

    def macs(self, shape) -> int:
        return self.layer.macs(self._padded_shape(shape))

    def output_shape(self, shape):
        return self.layer.output_shape(self._padded_shape(shape))


class Shallow2018(ConvFamily):
    """The front end and one R-STDP layer deciding by its first spike."""
    head_name = "s2"

    def add_head(self, config, num_classes: int) -> None:
        features = config.features_per_class * num_classes
        spec = HiddenSpec(in_channels=len(config.frontend.orientations), out_channels=features,
                          kernel_size=config.kernel_size, threshold=config.threshold, kwta=1,
                          inhibition_radius=0, rate_doubling_every=0)
        layer = HiddenLayer(spec, self.time_steps, "s2")
        layer.add_reward_rules(config.reward, config.punish, *config.weight_bounds, use_stabilizer=True)
        self.add_block(FirstSpikeDecision(layer, num_classes, config.features_per_class, config.dropout))

    def head_stage(self, input_node: int):
        c = self.config
        return RSTDPStage(self.head_name, self.head, input_node=input_node, window=c.adaptive_window,
                          adaptive_min=c.adaptive_min, adaptive_int=c.adaptive_int,
                          start_at_chance=c.adapt_from_chance)

    def _choose_readout(self, kind, C, values=None) -> None:
        if (kind or "rstdp") != "rstdp" or C is not None or values is not None:
            raise ValueError("the shallow network decides by its first spike; it takes no linear readout "
                             "(--readout svm/logistic reads the STDP features of the conv models)")

PRESETS = {
    "mozafari2018_shallow": {},
    "mozafari2018_shallow_eth80": dict(kernel_size=31, threshold=160.0, reward=(0.01, -0.0035),
                                       punish=(-0.01, 0.0006), dropout=0.4, default_epochs=(250,),
                                       frontend=GaborFrontEnd(pool=5, pool_stride=4)),
    "mozafari2018_shallow_norb": dict(kernel_size=23, threshold=150.0, reward=(0.05, -0.003),
                                      punish=(-0.05, 0.0005), dropout=0.5, default_epochs=(800,),
                                      frontend=GaborFrontEnd(pool=5, pool_stride=4, time_steps=100)),
}


def _factory(preset: str, description: str):
    def build(num_classes: int = 2, readout=None, **overrides) -> Shallow2018:
        config = dataclasses.replace(Shallow2018Config(), **PRESETS[preset])
        return Shallow2018(dataclasses.replace(config, **overrides), num_classes, readout)
    build.__name__, build.__doc__ = preset, description
    return register_model(build)


mozafari2018_shallow = _factory("mozafari2018_shallow", "Gabor S1C1 + one R-STDP layer deciding by its first "
                                                        "spike (Caltech faces/motorbikes settings)")
mozafari2018_shallow_eth80 = _factory("mozafari2018_shallow_eth80", "mozafari2018_shallow with the paper's "
                                                                    "ETH-80 settings")
mozafari2018_shallow_norb = _factory("mozafari2018_shallow_norb", "mozafari2018_shallow with the paper's NORB "
                                                                  "settings (T = 100)")
