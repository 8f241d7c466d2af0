"""The convolutional STDP / R-STDP family, and the layer tables its papers share.

Every conv model of the zoo is a `ConvFamily`: a front end, the hidden conv layers its config
names in `LAYERS` (forward order), then a decision block (`add_head`: by default one R-STDP
decision layer from the config's `decision`). Its stages follow from its blocks: one STDP stage
per STDP-trained layer (`block.stdp_layers()`, in forward order, reading the block's input
node), then the head's stage (`head_stage`: R-STDP with the config's adaptive rates). A paper's
file is then a config (its architecture table), and a model class only where its head or a
block is special (branches, a residual merge, voting heads, a rewarded hidden layer, a readout).

Weights are drawn in forward order as the blocks are added, so a seeded model matches the
seed's (and SpykeTorch's) initial weights.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from s1c1 import FrontEnd
from spiking.settings import setting, settings

from .base import SpikingModel
from .decision import DecisionLayer, DecisionSpec
from .layers import ADAPTIVE_WINDOW, HiddenLayer, HiddenSpec
from .readout import READOUTS, LinearReadout, ReadoutStage
from .stages import RSTDPStage, STDPStage

# ---- shared layer tables (Mozafari et al. 2018/2019; the seed's DeepSNN), one place for all
MOZAFARI_CONV1 = HiddenSpec(in_channels=6, out_channels=30, kernel_size=5, threshold=15.0, kwta=5,
                            inhibition_radius=3, pad=2, pool=2)
MOZAFARI_CONV2 = HiddenSpec(in_channels=30, out_channels=250, kernel_size=3, threshold=10.0, kwta=8,
                            inhibition_radius=1, pad=1, pool=3)
DEEP_CONV2 = HiddenSpec(in_channels=30, out_channels=150, kernel_size=3, threshold=10.0, kwta=8,
                        inhibition_radius=1, pad=1, pool=2)
DEEP_CONV3 = HiddenSpec(in_channels=150, out_channels=250, kernel_size=3, threshold=50.0, kwta=15,
                        inhibition_radius=1, pad=1, pool=3)
DEEP_DECISION = DecisionSpec(in_channels=250, kernel_size=5, neurons_per_class=20, pad=2)
# deep2024's and deepr2024's decision: one position over conv3's whole 3 x 3 pooled map, 60
# neurons per class and the teacher (their zoo rows in the README measure it against DEEP_DECISION)
DEEP_WHOLE_MAP_DECISION = dataclasses.replace(DEEP_DECISION, kernel_size=3, pad=0, neurons_per_class=60,
                                              teacher=0.5)


@settings
class FamilyConfig:
    """What every R-STDP model of the family shares: the DoG front end and the decision's
    adaptive rates (after each window of `adaptive_window` samples: reward rates = base *
    (miss * adaptive_int + adaptive_min), punish rates = base * (hit * adaptive_int +
    adaptive_min)). `LAYERS` names the config's plain hidden layers in forward order."""
    LAYERS: ClassVar[tuple] = ()
    frontend: FrontEnd = FrontEnd()
    adaptive_window: int = setting(ADAPTIVE_WINDOW, low=1)
    adaptive_min: float = setting(0.0, low=0)
    adaptive_int: float = setting(1.0, low=0)


class ConvFamily(SpikingModel):
    """Hidden conv layers (`config.LAYERS`) + a decision block (`add_head`); see the module
    docstring. Subclasses override `add_head` (and `head_stage`, or `build_stages` to add a
    stage) only.

    `readout` (a `models.readout.ReadoutChoice`, the CLI's `--readout` / `--readout-c`) is the
    decision chosen when the model is built: the head's own ("rstdp", or the model's own
    readout) or a linear readout ("svm", "logistic") of the head's input features; C None:
    chosen on the validation split."""
    head_name = "decision"

    def __init__(self, config, num_classes: int = 10, readout=None):
        super().__init__(config, config.frontend, num_classes)
        for name in config.LAYERS:
            self.add_block(HiddenLayer(getattr(config, name), self.time_steps, name))
        self.add_head(config, num_classes)
        if readout is not None:
            self._choose_readout(readout.kind, readout.C, readout.values)

    def _choose_readout(self, kind, C, values=None) -> None:
        head = self.head
        own = isinstance(head, LinearReadout)
        kind = kind or (head.kind if own else "rstdp")
        if kind not in READOUTS:
            raise ValueError(f"readout must be one of {', '.join(READOUTS)}, got {kind!r}")
        if kind == "rstdp":
            if own:
                raise ValueError("this model has no R-STDP decision layer; use --readout svm or logistic")
            if C is not None or values is not None:
                flag = "--readout-c" if C is not None else "--readout-values"
                raise ValueError(f"{flag} sets a linear readout: add --readout svm or logistic "
                                 f"(or --also-readout beside the R-STDP decision)")
            return
        # the head was built first (so the seeded weights drawn after it are the usual ones)
        values = values or "spiked"
        self.blocks[-1] = LinearReadout(kind, self.num_classes, C, values, self.time_steps)
        self.readout = {"readout": kind, "readout_C": C, "readout_values": values}

    def add_head(self, config, num_classes: int) -> None:
        """The blocks after the plain hidden layers (default: one R-STDP decision layer)."""
        self.add_block(DecisionLayer(config.decision, num_classes, self.time_steps))

    def build_stages(self):
        stages = [STDPStage(layer.name, layer, input_node=index)
                  for index, block in enumerate(self.blocks) for layer in block.stdp_layers()]
        return tuple(stages) + (self.head_stage(len(self.blocks) - 1),)

    def head_stage(self, input_node: int):
        """R-STDP of the head with the config's adaptive rates, or fitting its linear readout."""
        if isinstance(self.head, LinearReadout):
            return ReadoutStage(f"readout_{self.head.kind}", self.head, input_node=input_node)
        return RSTDPStage(self.head_name, self.head, input_node=input_node, window=self.config.adaptive_window,
                          adaptive_min=self.config.adaptive_min, adaptive_int=self.config.adaptive_int)
