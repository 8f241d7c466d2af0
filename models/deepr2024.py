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

from s1c1 import FrontEnd

from spiking.settings import setting, settings

from ._registry import register_model
from .base import SpikingModel
from .deep2024 import CONV2, CONV3, DECISION
from .heads import RewardedChain
from .layers import ADAPTIVE_WINDOW, DecisionLayer, DecisionSpec, HiddenLayer, HiddenSpec
from .mozafari2018 import CONV1
from .stages import RSTDPStage, STDPStage


@settings
class DeepR2024Config:
    frontend: FrontEnd = FrontEnd()
    conv1: HiddenSpec = CONV1
    conv2: HiddenSpec = CONV2
    conv3: HiddenSpec = dataclasses.replace(CONV3, inhibition_radius=0, use_stabilizer=False)
    conv3_reward: tuple = (0.001, -0.00075)
    conv3_punish: tuple = (-0.001, 0.000125)
    conv3_bounds: tuple = (0.0, 1.0)
    decision: DecisionSpec = DECISION
    schedule: str = "joint"
    adaptive_window: int = setting(ADAPTIVE_WINDOW, low=1)
    adaptive_min: float = setting(0.0, low=0)
    adaptive_int: float = setting(1.0, low=0)
    default_epochs: tuple = (2, 4, 4, 100)


class DeepR2024(SpikingModel):
    def __init__(self, config: DeepR2024Config = DeepR2024Config(), num_classes: int = 10):
        super().__init__(config, config.frontend, num_classes)
        steps = self.time_steps
        self.add_block(HiddenLayer(config.conv1, steps, "conv1"))
        self.add_block(HiddenLayer(config.conv2, steps, "conv2"))
        conv3 = HiddenLayer(config.conv3, steps, "conv3")
        conv3.add_reward_rules(config.conv3_reward, config.conv3_punish, *config.conv3_bounds)
        self.add_block(RewardedChain(conv3, DecisionLayer(config.decision, num_classes, steps),
                                     config.schedule))

    def build_stages(self):
        conv1, conv2, chain = self.blocks
        return (STDPStage("conv1", conv1, input_node=0),
                STDPStage("conv2", conv2, input_node=1),
                STDPStage("conv3", chain.hidden, input_node=2),
                RSTDPStage("conv3+decision", chain, input_node=2, window=self.config.adaptive_window,
                           adaptive_min=self.config.adaptive_min, adaptive_int=self.config.adaptive_int))


@register_model
def deepr2024(num_classes: int = 10, **overrides) -> DeepR2024:
    """deep2024 with conv3 trained by R-STDP jointly with the decision layer."""
    return DeepR2024(dataclasses.replace(DeepR2024Config(), **overrides), num_classes)


@register_model
def deepr2024_greedy(num_classes: int = 10, **overrides) -> DeepR2024:
    """deepr2024 with conv3 and the decision layer taking turns, one rate window each."""
    return DeepR2024(dataclasses.replace(DeepR2024Config(schedule="greedy"), **overrides), num_classes)
