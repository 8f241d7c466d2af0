"""resnet2024 (ResSNN of the seed): deep2024 with a skip path around conv3.

| node | layer | operation | MNIST output |
|---|---|---|---|
| 0-2 | front end, conv1, conv2 | as deep2024 | 150 x 7 x 7 |
| 3 | conv3 + skip | pad 1, conv 150->250 k3, fire > 50, STDP k=15 r=1; skip: untrained 1x1 conv 150->250 firing above 0; merged by OR (earlier spike), pool 3 | 250 x 2 x 2 |
| 4 | decision | pad 2, conv 250->200 k4, R-STDP | 200 x 3 x 3 |

Fixes relative to the seed: the merge is an OR of spike times, so the wave stays cumulative
(the seed's "first_spike" merge made it one-hot in time and the decision layer, which reads the
last step, was always silent; its eval path also merged differently from training); the skip
reads conv3's own input at the same 7 x 7 size, so no bilinear resizing is needed. As in the
seed the skip is untrained and, firing above 0, its 250 maps are identical ("some conv2 feature
spiked here"); `skip_threshold` makes it selective.
"""
from __future__ import annotations

import dataclasses

from s1c1 import FrontEnd

from spiking.settings import setting, settings

from ._registry import register_model
from .base import SpikingModel
from .deep2024 import CONV2, CONV3
from .layers import ADAPTIVE_WINDOW, MAX_KERNEL, DecisionLayer, DecisionSpec, HiddenLayer, HiddenSpec, Residual
from .mozafari2018 import CONV1
from .stages import RSTDPStage, STDPStage


@settings
class ResNet2024Config:
    frontend: FrontEnd = FrontEnd()
    conv1: HiddenSpec = CONV1
    conv2: HiddenSpec = CONV2
    conv3: HiddenSpec = dataclasses.replace(CONV3, pool=1)
    skip_threshold: float = setting(0.0, low=0)
    merge_pool: int = setting(3, low=1, high=MAX_KERNEL)
    decision: DecisionSpec = DecisionSpec(in_channels=250, kernel_size=4, neurons_per_class=20, pad=2)
    adaptive_window: int = setting(ADAPTIVE_WINDOW, low=1)
    adaptive_min: float = setting(0.0, low=0)
    adaptive_int: float = setting(1.0, low=0)
    default_epochs: tuple = (2, 4, 4, 100)


class ResNet2024(SpikingModel):
    def __init__(self, config: ResNet2024Config = ResNet2024Config(), num_classes: int = 10):
        super().__init__(config, config.frontend, num_classes)
        steps = self.time_steps
        self.add_block(HiddenLayer(config.conv1, steps, "conv1"))
        self.add_block(HiddenLayer(config.conv2, steps, "conv2"))
        self.add_block(Residual(HiddenLayer(config.conv3, steps, "conv3"), config.skip_threshold,
                                config.merge_pool, steps))
        self.add_block(DecisionLayer(config.decision, num_classes, steps))

    def build_stages(self):
        conv1, conv2, residual, decision = self.blocks
        return (STDPStage("conv1", conv1, input_node=0), STDPStage("conv2", conv2, input_node=1),
                STDPStage("conv3", residual.main, input_node=2),
                RSTDPStage("decision", decision, input_node=3, window=self.config.adaptive_window,
                           adaptive_min=self.config.adaptive_min, adaptive_int=self.config.adaptive_int))


@register_model
def resnet2024(num_classes: int = 10, **overrides) -> ResNet2024:
    """deep2024 with an OR-merged 1x1 skip path around conv3 + R-STDP decision (k4)."""
    return ResNet2024(dataclasses.replace(ResNet2024Config(), **overrides), num_classes)
