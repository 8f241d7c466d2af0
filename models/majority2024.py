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

from spiking.settings import require, setting, settings

from ._registry import register_model
from .family import DEEP_DECISION, MOZAFARI_CONV1, MOZAFARI_CONV2, ConvFamily, FamilyConfig
from .heads import MajorityHeads
from .decision import DecisionLayer, DecisionSpec
from .layers import MAX_KERNEL, HiddenSpec


@settings
class Majority2024Config(FamilyConfig):
    LAYERS = ("conv1", "conv2")
    conv1: HiddenSpec = MOZAFARI_CONV1
    conv2: HiddenSpec = MOZAFARI_CONV2
    head_kernels: tuple = setting((3, 5, 7), low=1, high=MAX_KERNEL)
    head: DecisionSpec = DEEP_DECISION
    fallback_head: int = setting(1, low=0)
    default_epochs: tuple = (2, 4, 100)

    def check(self) -> None:
        require(len(self.head_kernels) >= 1, "head_kernels needs at least one head")
        require(self.fallback_head < len(self.head_kernels),
                f"fallback_head must index one of the {len(self.head_kernels)} heads, got {self.fallback_head}")


class Majority2024(ConvFamily):
    def add_head(self, config, num_classes: int) -> None:
        heads = [DecisionLayer(dataclasses.replace(config.head, kernel_size=k), num_classes, self.time_steps,
                               f"decision_k{k}", "head") for k in config.head_kernels]
        self.add_block(MajorityHeads(heads, config.fallback_head))


@register_model
def majority2024(num_classes: int = 10, readout=None, **overrides) -> Majority2024:
    """mozafari2018's conv1/conv2 + three R-STDP decision heads (k3/k5/k7) voting."""
    return Majority2024(dataclasses.replace(Majority2024Config(), **overrides), num_classes, readout)
