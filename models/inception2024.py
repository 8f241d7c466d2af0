"""inception2024 (InceptionSNN of the seed): three parallel STDP branches after conv2.

| node | layer | operation | MNIST output |
|---|---|---|---|
| 0 | front end | 6 DoG maps, T = 15 | 6 x 28 x 28 |
| 1 | conv1 | pad 2, conv 6->30 k5, fire > 15, STDP k=5 r=3, pool 2 | 30 x 14 x 14 |
| 2 | conv2 | pad 1, conv 30->75 k3, fire > 10, STDP k=8 r=1, pool 2 | 75 x 7 x 7 |
| 3 | conv3a/b/c | pad 1, conv 75->100 with k3 / k5 / k7, fire > 50, STDP k=15 r=1; outputs padded by 0 / 1 / 2 to 7 x 7, concatenated, pool 3 | 300 x 2 x 2 |
| 4 | decision | pad 2, conv 300->200 k5, R-STDP | 200 x 2 x 2 |

Stages: STDP conv1, conv2, conv3a, conv3b, conv3c (one after the other, one epoch count each),
R-STDP decision. Fix relative to the seed: each branch has its own rate-doubling counter (the
seed shared one, so later branches started the schedule at a phase offset).
"""
from __future__ import annotations

import dataclasses

from s1c1 import FrontEnd

from spiking.settings import require, setting, settings

from ._registry import register_model
from .base import SpikingModel
from .layers import ADAPTIVE_WINDOW, MAX_KERNEL, Branches, DecisionLayer, DecisionSpec, HiddenLayer, HiddenSpec
from .mozafari2018 import CONV1
from .stages import RSTDPStage, STDPStage

BRANCH = HiddenSpec(in_channels=75, out_channels=100, kernel_size=3, threshold=50.0, kwta=15,
                    inhibition_radius=1, pad=1)


@settings
class Inception2024Config:
    frontend: FrontEnd = FrontEnd()
    conv1: HiddenSpec = CONV1
    conv2: HiddenSpec = HiddenSpec(in_channels=30, out_channels=75, kernel_size=3, threshold=10.0,
                                   kwta=8, inhibition_radius=1, pad=1, pool=2)
    branch_kernels: tuple = setting((3, 5, 7), low=1, high=MAX_KERNEL)
    branch: HiddenSpec = BRANCH
    branch_pool: int = setting(3, low=1, high=MAX_KERNEL)
    decision: DecisionSpec = DecisionSpec(in_channels=300, kernel_size=5, neurons_per_class=20, pad=2)
    adaptive_window: int = setting(ADAPTIVE_WINDOW, low=1)
    adaptive_min: float = setting(0.0, low=0)
    adaptive_int: float = setting(1.0, low=0)
    default_epochs: tuple = (2, 4, 4, 4, 4, 100)

    def check(self) -> None:
        require(len(self.branch_kernels) >= 1 and all(k % 2 == 1 for k in self.branch_kernels),
                f"branch_kernels must be odd sizes (the branches are padded to one output size), "
                f"got {self.branch_kernels!r}")


class Inception2024(SpikingModel):
    def __init__(self, config: Inception2024Config = Inception2024Config(), num_classes: int = 10):
        super().__init__(config, config.frontend, num_classes)
        steps = self.time_steps
        self.add_block(HiddenLayer(config.conv1, steps, "conv1"))
        self.add_block(HiddenLayer(config.conv2, steps, "conv2"))
        smallest = min(config.branch_kernels)
        branches = [HiddenLayer(dataclasses.replace(config.branch, kernel_size=k), steps, f"conv3{'abc'[i]}")
                    for i, k in enumerate(config.branch_kernels)]
        out_pads = [(k - smallest) // 2 for k in config.branch_kernels]   # to the k3 output size
        self.add_block(Branches(branches, out_pads, config.branch_pool, steps))
        self.add_block(DecisionLayer(config.decision, num_classes, steps))

    def build_stages(self):
        conv1, conv2, branches, decision = self.blocks
        return ((STDPStage("conv1", conv1, input_node=0), STDPStage("conv2", conv2, input_node=1))
                + tuple(STDPStage(b.name, b, input_node=2) for b in branches.branches)
                + (RSTDPStage("decision", decision, input_node=3, window=self.config.adaptive_window,
                              adaptive_min=self.config.adaptive_min, adaptive_int=self.config.adaptive_int),))


@register_model
def inception2024(num_classes: int = 10, **overrides) -> Inception2024:
    """Three parallel STDP branches (k3/k5/k7, 100 maps each) after conv2 + R-STDP decision."""
    return Inception2024(dataclasses.replace(Inception2024Config(), **overrides), num_classes)
