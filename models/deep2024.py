"""deep2024 (DeepSNN of the seed): three STDP layers and an R-STDP decision layer.

| node | layer | operation | MNIST output |
|---|---|---|---|
| 0 | front end | 6 DoG maps, T = 15 | 6 x 28 x 28 |
| 1 | conv1 | pad 2, conv 6->30 k5, fire > 15, STDP k=5 r=3, pool 2 | 30 x 14 x 14 |
| 2 | conv2 | pad 1, conv 30->150 k3, fire > 10, STDP k=8 r=1, pool 2 | 150 x 7 x 7 |
| 3 | conv3 | pad 1, conv 150->250 k3, fire > 50, STDP k=15 r=1 (stabilised), pool 3 | 250 x 2 x 2 |
| 4 | decision | pad 2, conv 250->200 k5, largest final potential decides, R-STDP | 200 x 2 x 2 |

Fixes relative to the seed: the default `--epochs` has one count per stage (the seed's crashed);
the decision width follows the number of classes; the seed's unreported spike counters (host
syncs on every sample) are gone.
"""
from __future__ import annotations

import dataclasses

from s1c1 import FrontEnd

from spiking.settings import setting, settings

from ._registry import register_model
from .base import SpikingModel
from .layers import ADAPTIVE_WINDOW, DecisionLayer, DecisionSpec, HiddenLayer, HiddenSpec
from .mozafari2018 import CONV1
from .stages import RSTDPStage, STDPStage

CONV2 = HiddenSpec(in_channels=30, out_channels=150, kernel_size=3, threshold=10.0, kwta=8,
                   inhibition_radius=1, pad=1, pool=2)
CONV3 = HiddenSpec(in_channels=150, out_channels=250, kernel_size=3, threshold=50.0, kwta=15,
                   inhibition_radius=1, pad=1, pool=3)
DECISION = DecisionSpec(in_channels=250, kernel_size=5, neurons_per_class=20, pad=2)


@settings
class Deep2024Config:
    frontend: FrontEnd = FrontEnd()
    conv1: HiddenSpec = CONV1
    conv2: HiddenSpec = CONV2
    conv3: HiddenSpec = CONV3
    decision: DecisionSpec = DECISION
    adaptive_window: int = setting(ADAPTIVE_WINDOW, low=1)
    adaptive_min: float = setting(0.0, low=0)
    adaptive_int: float = setting(1.0, low=0)
    default_epochs: tuple = (2, 4, 4, 100)


class Deep2024(SpikingModel):
    def __init__(self, config: Deep2024Config = Deep2024Config(), num_classes: int = 10):
        super().__init__(config, config.frontend, num_classes)
        steps = self.time_steps
        for name in ("conv1", "conv2", "conv3"):
            self.add_block(HiddenLayer(getattr(config, name), steps, name))
        self.add_block(DecisionLayer(config.decision, num_classes, steps))

    def build_stages(self):
        *hidden, decision = self.blocks
        return tuple(STDPStage(layer.name, layer, input_node=i) for i, layer in enumerate(hidden)) + (
            RSTDPStage("decision", decision, input_node=len(hidden), window=self.config.adaptive_window,
                       adaptive_min=self.config.adaptive_min, adaptive_int=self.config.adaptive_int),)


@register_model
def deep2024(num_classes: int = 10, **overrides) -> Deep2024:
    """Three STDP layers (30, 150, 250 maps) + R-STDP decision (20 per class)."""
    return Deep2024(dataclasses.replace(Deep2024Config(), **overrides), num_classes)
