"""deeper2024 (DeeperSNN of the seed): four STDP layers and an R-STDP decision layer.

| node | layer | operation | MNIST output |
|---|---|---|---|
| 0 | front end | 6 DoG maps, T = 15 | 6 x 28 x 28 |
| 1 | conv1 | pad 2, conv 6->30 k5, fire > 15, STDP k=5 r=3, pool 2 | 30 x 14 x 14 |
| 2 | conv2 | pad 1, conv 30->150 k3, fire > 10, STDP k=8 r=1, pool 2 | 150 x 7 x 7 |
| 3 | conv3 | pad 1, conv 150->250 k3, fire > 50, STDP k=15 r=1, pool 2 | 250 x 3 x 3 |
| 4 | conv4 + skip | pad 1, conv 250->200 k3, fire > 128, STDP k=20 r=1; skip: conv3's 250 maps unchanged, concatenated with conv4's 200 (`merge=concat`) | 450 x 3 x 3 |
| 5 | decision | conv 450->1500 k3 (one position over the whole 3 x 3 map, 150 per class), R-STDP with the teacher (t = 0.5), predicting with its kernels averaged over the epoch | 1500 x 1 x 1 |

So conv1-conv3 are deep2024's, and conv4's spikes reach the decision beside conv3's (a dense
skip, as resnet2024's around conv3): the decision reads what deep2024's reads, and conv4's.

The decision is deep2024's (`DEEP_WHOLE_MAP_DECISION`) with 150 neurons per class instead of 60
and `averaged` (prediction with the kernels averaged over the epoch's adaptive-rate windows). On
full MNIST (exact STDP layers, seeds 0 / 1, the same conv1-conv4) R-STDP reached 94.20 % /
94.04 % against logistic readouts of the same features of 96.71 % / 96.85 % (2.5 / 2.8 points).
With 100 per class, averaged: 93.46 % / 94.17 % (3.3 / 2.7). deep2024's decision as it is (60
per class, not averaged: `--set decision.neurons_per_class=60 --set decision.averaged=false`):
92.95 % / 93.91 % (3.8 / 2.9). The seed's decision, k5 pad 2 with 20 per class: 91.87 % /
92.70 % against 96.66 % / 96.93 % (4.8 / 4.2). It is level with deep2024 on the same
conv1-conv3 (94.08 % / 94.01 %): conv4 adds nothing a readout can use (96.71 % against
96.67 %). R-STDP on conv4 alone (`merge=none`, deep2024's decision) learned far more slowly:
75.2 % validation after 10 epochs against the concatenation's 92.8 %. The seed's decision:
`--set decision.kernel_size=5 --set decision.pad=2 --set decision.neurons_per_class=20 --set
decision.teacher=0 --set decision.averaged=false --epochs 2 4 4 4 100`.

How it came to this (README, Results): the seed's layout pooled conv3 by 3 and conv4 by 3, so
conv4 saw a 2 x 2 map and passed an unordered set of 200 bits to the decision (a linear probe of
it: 47.6 % on 10 % of MNIST, against 86.1 % for conv3), and its R-STDP collapsed onto a few
neurons once punishment vanished with the hit rate (17.9 % test). Unpooling conv3 and a rate
floor made it learn on 10 % of MNIST (65.6 %), but on full MNIST STDP made conv4 sparse and it
kept little class information whatever its threshold or width (probe 0.58 against conv3's
0.89: 42.0 % test). Concatenating conv3's spikes with conv4's before pooling them by 2 gave
82.5 % on full MNIST (conv4 nearly silent there; the seed's conv1 kernel of 3 and the unpooled
conv3 keep less class information than deep2024's layers: probe 0.89 against 0.95). On 10 % of
MNIST this layout scores 88.0 % where that one scored 78.6 %.

These earlier layouts ran the seed's decision: put `--set decision.kernel_size=5 --set
decision.pad=2 --set decision.neurons_per_class=20 --set decision.teacher=0 --set
decision.averaged=false` first (a later `--set` of the same key wins, so a layout's own decision
settings below apply).
- the full-MNIST run's layout: `--set conv1.kernel_size=3 --set conv3.pool=1 --set conv4.pool=2`;
- conv4 alone, conv3 unpooled (the default before it): `--set merge=none --set
  decision.in_channels=200 --set decision.kernel_size=3 --set decision.pad=1 --set
  decision.neurons_per_class=10 --set adaptive_min=0.2 --set adaptive_int=0.8 --set
  conv1.kernel_size=3 --set conv3.pool=1 --set conv4.pool=2`;
- the seed's design: `--set merge=none --set decision.in_channels=200 --set
  decision.kernel_size=3 --set decision.neurons_per_class=10 --set conv1.kernel_size=3 --set
  conv3.pool=3 --set conv4.pad=2 --set conv4.pool=3`.

`conv4.pool` is the pooling after conv4 (after its merge, when it has a skip). Fixes relative to
the seed (in every layout): conv4 fires at its configured threshold (128; the seed hard-coded
1) and its STDP uses the winners it computes (the seed recomputed them).
"""
from __future__ import annotations

import dataclasses

from spiking.settings import setting, settings

from ._registry import register_model
from .composite import Residual, require_merged_channels
from .decision import DecisionSpec
from .family import DEEP_CONV2, DEEP_CONV3, DEEP_WHOLE_MAP_DECISION, MOZAFARI_CONV1, ConvFamily, FamilyConfig
from .layers import HiddenLayer, HiddenSpec


@settings
class Deeper2024Config(FamilyConfig):
    LAYERS = ("conv1", "conv2", "conv3")
    conv1: HiddenSpec = MOZAFARI_CONV1
    conv2: HiddenSpec = DEEP_CONV2
    conv3: HiddenSpec = dataclasses.replace(DEEP_CONV3, pool=2)
    conv4: HiddenSpec = HiddenSpec(in_channels=250, out_channels=200, kernel_size=3, threshold=128.0,
                                   kwta=20, inhibition_radius=1, pad=1, pool=1)
    merge: str = setting("concat", choices=Residual.MERGES, absent="none")     # runs before the skip: none
    skip_threshold: float = setting(0.0, low=0)
    # 150 per class and averaged kernels: +1.25 / +0.13 points over deep2024's decision (bench/NOTES.md)
    decision: DecisionSpec = dataclasses.replace(DEEP_WHOLE_MAP_DECISION, in_channels=450, neurons_per_class=150,
                                                 averaged=True)
    default_epochs: tuple = (2, 4, 4, 4, 60)

    def check(self) -> None:
        require_merged_channels(self.conv4, self.merge, self.decision)


class Deeper2024(ConvFamily):
    """conv4 as a plain layer (`merge=none`) or inside a skip block (conv3's spikes merged with
    conv4's, then pooled by `conv4.pool`), then the R-STDP decision."""

    def add_head(self, config, num_classes: int) -> None:
        if config.merge == "none":
            self.add_block(HiddenLayer(config.conv4, self.time_steps, "conv4"))
        else:
            main = HiddenLayer(dataclasses.replace(config.conv4, pool=1), self.time_steps, "conv4")
            self.add_block(Residual(main, config.skip_threshold, config.conv4.pool, self.time_steps, config.merge))
        super().add_head(config, num_classes)


@register_model
def deeper2024(num_classes: int = 10, readout=None, **overrides) -> Deeper2024:
    """deep2024's three STDP layers, a fourth (200 maps) whose spikes are concatenated with
    conv3's + R-STDP decision (150 per class, averaged kernels)."""
    return Deeper2024(dataclasses.replace(Deeper2024Config(), **overrides), num_classes, readout)
