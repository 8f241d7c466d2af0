"""`SpikingModel`: a chain of blocks ending in a decision head, plus the stages that train it.

Node `k` is the input of block `k` (node 0 is the front end's output). Models and stages never
touch the filesystem, stdout or TensorBoard; the trainer owns caching, batching, checkpoints and
the order of stages.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from s1c1 import FrontEnd
from spiking import times as st

from .layers import Prediction


class SpikingModel(nn.Module):
    """Subclasses build their blocks with `add_block` in forward order (so seeded weights are
    drawn in a fixed order) and return their stages from `build_stages`; `config` is a frozen
    dataclass holding every hyperparameter, `config.default_epochs` one count per stage."""

    def __init__(self, config, frontend: FrontEnd, num_classes: int):
        super().__init__()
        self.config = config
        self.frontend = frontend
        self.num_classes = num_classes
        self.time_steps = frontend.time_steps
        self.blocks = nn.ModuleList()
        self.readout = None         # set by attach_readout: {"readout": kind, "readout_C": C}
        self._stages = None

    def add_block(self, block: nn.Module) -> nn.Module:
        self.blocks.append(block)
        return block

    @property
    def stages(self) -> tuple:
        if self._stages is None:
            self._stages = tuple(self.build_stages())
        return self._stages

    def build_stages(self):
        raise NotImplementedError

    @property
    def head(self):
        return self.blocks[-1]

    def forward_times(self, times: torch.Tensor, start: int = 0, stop: int | None = None):
        """Exact spike times of node `stop` from spike times of node `start`."""
        for block in self.blocks[start:stop]:
            times = block.forward_times(times)
        return times

    def forward_final(self, final: torch.Tensor, start: int = 0, stop: int | None = None):
        """Final map of node `stop` (default: the head's input) from the final map of node
        `start` (one convolution per layer)."""
        stop = len(self.blocks) - 1 if stop is None else stop
        for block in self.blocks[start:stop]:
            final = block.forward_final(final)
        return final

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, start: int = 0, final: bool = False) -> Prediction:
        """Decisions from node `start` (spike times, or a final map when `final`)."""
        x = inputs.float() if final else st.final_map(inputs, self.time_steps)
        return self.head.predict(self.forward_final(x, start))

    def forward(self, times: torch.Tensor) -> torch.Tensor:
        """Class decisions [B] (-1 = silence) from front-end spike times [B, C, H, W]."""
        return self.predict(times).classes

    def node_shapes(self, input_shape) -> list:
        shapes = [tuple(input_shape)]
        for block in self.blocks:
            shapes.append(tuple(block.output_shape(shapes[-1])))
        return shapes

    def inference_macs(self, input_shape) -> int:
        """Multiply-adds of one inference on final maps (one convolution per layer)."""
        return sum(block.macs(shape) for block, shape in zip(self.blocks, self.node_shapes(input_shape)))

    def stdp_layers(self) -> list:
        """Every STDP-trained hidden layer, in forward order."""
        return [layer for block in self.blocks for layer in block.stdp_layers()]

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def hyperparameters(self) -> dict:
        return {**dataclasses.asdict(self.config), **(self.readout or {})}
