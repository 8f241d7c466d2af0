"""majority2024 (MajoritySNN of the seed): three R-STDP decision layers voting.

| node | layer | operation | MNIST output |
|---|---|---|---|
| 0-2 | front end, conv1, conv2 | as mozafari2018 | 250 x 4 x 4 |
| 3 | decision a/b/c | pad 2, conv 250->200 with k3 / k5 / k7, each its own R-STDP | 200 x 6 x 6 / 4 x 4 / 2 x 2 |

Output: the class with at least 2 of the 3 votes, else the k5 head's vote. Each head is rewarded
or punished by its own vote (silent: nothing); all heads adapt their rates from the combined
decision. Fix relative to the seed: silent heads are handled (the seed raised a ValueError on
ragged votes when one or two heads were silent).
"""
from __future__ import annotations

import dataclasses

from s1c1 import FrontEnd

from spiking.settings import require, setting, settings

from ._registry import register_model
from .base import SpikingModel
from .heads import MajorityHeads
from .layers import ADAPTIVE_WINDOW, MAX_KERNEL, DecisionLayer, DecisionSpec, HiddenLayer, HiddenSpec
from .mozafari2018 import CONV1, CONV2
from .stages import RSTDPStage, STDPStage


@settings
class Majority2024Config:
    frontend: FrontEnd = FrontEnd()
    conv1: HiddenSpec = CONV1
    conv2: HiddenSpec = CONV2
    head_kernels: tuple = setting((3, 5, 7), low=1, high=MAX_KERNEL)
    head: DecisionSpec = DecisionSpec(in_channels=250, kernel_size=5, neurons_per_class=20, pad=2)
    fallback_head: int = setting(1, low=0)
    adaptive_window: int = setting(ADAPTIVE_WINDOW, low=1)
    adaptive_min: float = setting(0.0, low=0)
    adaptive_int: float = setting(1.0, low=0)
    default_epochs: tuple = (2, 4, 100)

    def check(self) -> None:
        require(len(self.head_kernels) >= 1, "head_kernels needs at least one head")
        require(self.fallback_head < len(self.head_kernels),
                f"fallback_head must index one of the {len(self.head_kernels)} heads, got {self.fallback_head}")


class Majority2024(SpikingModel):
    def __init__(self, config: Majority2024Config = Majority2024Config(), num_classes: int = 10):
        super().__init__(config, config.frontend, num_classes)
        steps = self.time_steps
        self.add_block(HiddenLayer(config.conv1, steps, "conv1"))
        self.add_block(HiddenLayer(config.conv2, steps, "conv2"))
        heads = [DecisionLayer(dataclasses.replace(config.head, kernel_size=k), num_classes, steps,
                               f"decision_k{k}") for k in config.head_kernels]
        self.add_block(MajorityHeads(heads, config.fallback_head))

    def build_stages(self):
        conv1, conv2, heads = self.blocks
        return (STDPStage("conv1", conv1, input_node=0), STDPStage("conv2", conv2, input_node=1),
                RSTDPStage("decision", heads, input_node=2, window=self.config.adaptive_window,
                           adaptive_min=self.config.adaptive_min, adaptive_int=self.config.adaptive_int))


@register_model
def majority2024(num_classes: int = 10, **overrides) -> Majority2024:
    """mozafari2018's conv1/conv2 + three R-STDP decision heads (k3/k5/k7) voting."""
    return Majority2024(dataclasses.replace(Majority2024Config(), **overrides), num_classes)
