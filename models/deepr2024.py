"""deepr2024 (DeepRSNN of the seed): deep2024 whose conv3, after its STDP stage, is trained by
R-STDP together with the decision layer.

| node | layer | operation | MNIST output |
|---|---|---|---|
| 0-3 | front end, conv1, conv2, conv3 | as deep2024 (conv3 STDP r=1 stabilised, pool 2), conv3 also with reward rules (reward (0.001, -0.00075), punish (-0.001, 0.000125), bounds [0, 1]) | 250 x 3 x 3 |
| 4 | decision | deep2024's: conv 250->600 k3 over the whole map, R-STDP with the teacher | 600 x 1 x 1 |

Stages (default `--epochs 2 4 4 60 3`): STDP of conv1, conv2, conv3; R-STDP of the decision
alone on conv3's maps (deep2024's decision stage); then R-STDP of conv3 and the decision
together from the decision's outcome ("conv3+decision": conv3's R-STDP winners from pointwise
inhibition and its k-WTA, k = 15; its un-inhibited spikes feed the decision layer; both layers'
rates adapt from the same hit/miss fractions). The last stage validates its starting weights
(epoch 0) and keeps them unless one of its epochs beats them, so rewarding conv3 is kept only
where it helps. With the same seed the first four stages compute what deep2024 computes: the
row beside deep2024's in the zoo table is the effect of rewarding conv3.

- `deepr2024` trains both layers on every sample of the last stage ("joint").
- `deepr2024_greedy` alternates them, one adaptive-rate window each (see
  `models.heads.RewardedChain`); this replaces the seed's `epoch + iteration % 2 == 0`
  precedence bug, which trained conv3 only on even batches of epoch 0.

Changed from the seed, whose conv3 learned by STDP with r = 0 and no stabiliser, was pooled by 3
and went straight into the joint stage with an untrained decision layer (`--set
conv3.inhibition_radius=0 --set conv3.use_stabilizer=false --set conv3.pool=3 --epochs 2 4 4 0
100`): on full MNIST that joint stage took 15-25 minutes per epoch and its validation accuracy
fell over the first three epochs (75.4, 74.9, 71.3 %), so the decision now learns first, as
deep2024's does, and the expensive joint stage refines it. The seed's always-true `epoch >= 0`
guards are gone.
"""
from __future__ import annotations

import dataclasses

from spiking.settings import setting, settings

from ._registry import register_model
from .decision import DecisionSpec
from .family import DEEP_CONV2, DEEP_CONV3, DEEP_WHOLE_MAP_DECISION, MOZAFARI_CONV1, ConvFamily, FamilyConfig
from .heads import RewardedChain
from .layers import HiddenSpec
from .readout import LinearReadout
from .stages import RSTDPStage


@settings
class DeepR2024Config(FamilyConfig):
    LAYERS = ("conv1", "conv2", "conv3")
    conv1: HiddenSpec = MOZAFARI_CONV1
    conv2: HiddenSpec = DEEP_CONV2
    conv3: HiddenSpec = dataclasses.replace(DEEP_CONV3, pool=2)
    conv3_reward: tuple = (0.001, -0.00075)
    conv3_punish: tuple = (-0.001, 0.000125)
    conv3_bounds: tuple = (0.0, 1.0)
    decision: DecisionSpec = DEEP_WHOLE_MAP_DECISION
    schedule: str = setting("joint", choices=RewardedChain.SCHEDULES)
    default_epochs: tuple = (2, 4, 4, 60, 3)


class DeepR2024(ConvFamily):
    """deep2024's blocks (conv3 with reward rules too) and stages, then the stage that rewards
    conv3 and the decision together (a `RewardedChain` over the same two layers)."""

    def __init__(self, config, num_classes: int = 10, readout=None):
        super().__init__(config, num_classes, readout)
        if isinstance(self.head, LinearReadout):        # no reward stage: deep2024's four counts
            self.config = dataclasses.replace(self.config, default_epochs=self.config.default_epochs[:4])

    def add_head(self, config, num_classes: int) -> None:
        self.blocks[-1].add_reward_rules(config.conv3_reward, config.conv3_punish, *config.conv3_bounds)
        super().add_head(config, num_classes)

    def build_stages(self):
        stages = super().build_stages()
        if isinstance(self.head, LinearReadout):        # a readout replaces the decision: no reward
            return stages
        conv3 = self.blocks[-2]
        chain = RewardedChain(conv3, self.head, self.config.schedule)
        c = self.config
        joint = RSTDPStage(f"{conv3.name}+decision", chain, input_node=len(self.blocks) - 2,
                           window=c.adaptive_window, adaptive_min=c.adaptive_min, adaptive_int=c.adaptive_int,
                           validate_start=True)
        return stages + (joint,)


@register_model
def deepr2024(num_classes: int = 10, readout=None, **overrides) -> DeepR2024:
    """deep2024, then conv3 trained by R-STDP jointly with the decision layer."""
    return DeepR2024(dataclasses.replace(DeepR2024Config(), **overrides), num_classes, readout)


@register_model
def deepr2024_greedy(num_classes: int = 10, readout=None, **overrides) -> DeepR2024:
    """deepr2024 with conv3 and the decision layer taking turns, one rate window each."""
    return DeepR2024(dataclasses.replace(DeepR2024Config(schedule="greedy"), **overrides), num_classes, readout)
