"""deepr2024 (DeepRSNN of the seed): deep2024 whose conv3, after its STDP stage, is trained by
R-STDP together with the decision layer.

| node | layer | operation | MNIST output |
|---|---|---|---|
| 0-2 | front end, conv1, conv2 | as deep2024 | 150 x 7 x 7 |
| 3 | conv3 | pad 1, conv 150->250 k3, fire > 50, STDP k=15 r=0 without stabiliser, then R-STDP (reward (0.001, -0.00075), punish (-0.001, 0.000125), bounds [0, 1]), pool 3 | 250 x 2 x 2 |
| 4 | decision | pad 2, conv 250->200 k5, R-STDP | 200 x 2 x 2 |

Stages: STDP conv1, conv2, conv3, then R-STDP of conv3 + decision from the decision's outcome
(conv3's R-STDP winners: pointwise inhibition, k = 15, r = 0; its un-inhibited spikes feed the
decision layer; both layers' rates adapt from the same hit/miss fractions).

- `deepr2024` trains both layers on every sample ("joint").
- `deepr2024_greedy` alternates them, one adaptive-rate window each (see
  `models.heads.RewardedChain`); this replaces the seed's `epoch + iteration % 2 == 0`
  precedence bug, which trained conv3 only on even batches of epoch 0.
The seed's always-true `epoch >= 0` guards are gone.
"""
from __future__ import annotations

import dataclasses

from spiking.settings import settings

from ._registry import register_model
from .family import DEEP_CONV2, DEEP_CONV3, DEEP_DECISION, MOZAFARI_CONV1, ConvFamily, FamilyConfig
from .heads import RewardedChain
from .decision import DecisionLayer, DecisionSpec
from .layers import HiddenLayer, HiddenSpec


@settings
class DeepR2024Config(FamilyConfig):
    LAYERS = ("conv1", "conv2")
    conv1: HiddenSpec = MOZAFARI_CONV1
    conv2: HiddenSpec = DEEP_CONV2
    conv3: HiddenSpec = dataclasses.replace(DEEP_CONV3, inhibition_radius=0, use_stabilizer=False)
    conv3_reward: tuple = (0.001, -0.00075)
    conv3_punish: tuple = (-0.001, 0.000125)
    conv3_bounds: tuple = (0.0, 1.0)
    decision: DecisionSpec = DEEP_DECISION
    schedule: str = "joint"
    default_epochs: tuple = (2, 4, 4, 100)


class DeepR2024(ConvFamily):
    """conv3 is STDP-trained first (its own stage), then trained by reward with the decision."""
    head_name = "conv3+decision"

    def add_head(self, config, num_classes: int) -> None:
        conv3 = HiddenLayer(config.conv3, self.time_steps, "conv3")
        conv3.add_reward_rules(config.conv3_reward, config.conv3_punish, *config.conv3_bounds)
        self.add_block(RewardedChain(conv3, DecisionLayer(config.decision, num_classes, self.time_steps),
                                     config.schedule))


@register_model
def deepr2024(num_classes: int = 10, readout=None, **overrides) -> DeepR2024:
    """deep2024 with conv3 trained by R-STDP jointly with the decision layer."""
    return DeepR2024(dataclasses.replace(DeepR2024Config(), **overrides), num_classes, readout)


@register_model
def deepr2024_greedy(num_classes: int = 10, readout=None, **overrides) -> DeepR2024:
    """deepr2024 with conv3 and the decision layer taking turns, one rate window each."""
    return DeepR2024(dataclasses.replace(DeepR2024Config(schedule="greedy"), **overrides), num_classes, readout)
