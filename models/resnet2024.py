"""resnet2024 (ResSNN of the seed): deep2024 with a skip path around conv3.

| node | layer | operation | MNIST output |
|---|---|---|---|
| 0-2 | front end, conv1, conv2 | as deep2024 | 150 x 7 x 7 |
| 3 | conv3 + skip | pad 1, conv 150->250 k3, fire > 50, STDP k=15 r=1; skip: conv2's 150 maps unchanged, concatenated with conv3's 250 (`merge=concat`), pool 3 | 400 x 2 x 2 |
| 4 | decision | pad 2, conv 400->200 k4, R-STDP | 200 x 3 x 3 |

The seed's design (`--set merge=or --set decision.in_channels=250`): the skip is an untrained
1x1 conv 150->250 firing above `skip_threshold` (0), merged with conv3 by OR. Firing above 0
with all-positive weights, its 250 maps are identical ("some conv2 feature spiked here"), so
OR-ing it in leaves ~99 % of the decision's inputs on and the decision at chance: hence the
concatenation as the default, which keeps both conv3's features and conv2's spikes
(`merge=none` drops the skip).

Fixes relative to the seed (in both merges): the OR merge keeps the wave cumulative (the seed's
"first_spike" merge made it one-hot in time and the decision layer, which reads the last step,
was always silent; its eval path also merged differently from training); the skip reads
conv3's own input at the same 7 x 7 size, so no bilinear resizing is needed.
"""
from __future__ import annotations

import dataclasses

from spiking.settings import setting, settings

from ._registry import register_model
from .family import DEEP_CONV2, DEEP_CONV3, MOZAFARI_CONV1, ConvFamily, FamilyConfig
from .composite import Residual, require_merged_channels
from .decision import DecisionSpec
from .layers import MAX_KERNEL, HiddenLayer, HiddenSpec


@settings
class ResNet2024Config(FamilyConfig):
    LAYERS = ("conv1", "conv2")
    conv1: HiddenSpec = MOZAFARI_CONV1
    conv2: HiddenSpec = DEEP_CONV2
    conv3: HiddenSpec = dataclasses.replace(DEEP_CONV3, pool=1)
    merge: str = setting("concat", choices=Residual.MERGES)
    skip_threshold: float = setting(0.0, low=0)
    merge_pool: int = setting(3, low=1, high=MAX_KERNEL)
    decision: DecisionSpec = DecisionSpec(in_channels=400, kernel_size=4, neurons_per_class=20, pad=2)
    default_epochs: tuple = (2, 4, 4, 100)

    def check(self) -> None:
        require_merged_channels(self.conv3, self.merge, self.decision)


class ResNet2024(ConvFamily):
    """conv3 inside a residual block: its spikes merged with a skip path (`merge`), then pooled."""

    def add_head(self, config, num_classes: int) -> None:
        self.add_block(Residual(HiddenLayer(config.conv3, self.time_steps, "conv3"), config.skip_threshold,
                                config.merge_pool, self.time_steps, config.merge))
        super().add_head(config, num_classes)


@register_model
def resnet2024(num_classes: int = 10, readout=None, **overrides) -> ResNet2024:
    """deep2024 with conv2's spikes concatenated to conv3's (a skip path) + R-STDP decision (k4)."""
    return ResNet2024(dataclasses.replace(ResNet2024Config(), **overrides), num_classes, readout)
