"""Model base classes: what the trainer and the CLI rely on (`NetworkModel`), and the
convolutional STDP / R-STDP models built as a chain of blocks (`SpikingModel`).

Node `k` is the input of block `k` (node 0 is the front end's output). Models and stages never
touch the filesystem, stdout or TensorBoard; the trainer owns caching, batching, checkpoints and
the order of stages.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from spiking import times as st

from .decision import Prediction


class NetworkModel(nn.Module):
    """The model interface of the trainer and the CLI.

    `config` is a frozen dataclass holding every hyperparameter (`default_epochs`: one count
    per stage; optional `default_batch_size`); `frontend` encodes raw inputs into node 0;
    `build_stages` returns the stages in training order; `predict` maps node-0 inputs (or a
    later node's) to a `Prediction`. `predict_needs` says in which form node 0 is passed:
    "final" (the final map of spike times) or "times" (node 0 as encoded); `encoded_input`
    whether `forward_final` also takes node 0 as encoded (node 0 is not spike times: pixels,
    a per-step encoding).
    """
    predict_needs = "final"

    @property
    def encoded_input(self) -> bool:
        return self.predict_needs == "times"

    def __init__(self, config, frontend, num_classes: int):
        super().__init__()
        self.config = config
        self.frontend = frontend
        self.num_classes = num_classes
        self.time_steps = frontend.time_steps
        self.blocks = nn.ModuleList()
        self.readout = None         # a linear readout decides: {"readout": kind, "readout_C": C}
        self._stages = None
        # stochastic models (random masks, Bernoulli rates) draw from generators derived
        # from this seed, so that --seed and --resume reproduce them
        self.base_seed = torch.initial_seed() % (1 << 62)

    @property
    def stages(self) -> tuple:
        if self._stages is None:
            self._stages = tuple(self.build_stages())
        return self._stages

    def build_stages(self):
        raise NotImplementedError

    def predict(self, inputs: torch.Tensor, start: int = 0, final: bool = False) -> Prediction:
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Class decisions [B] (-1 = silence) from node-0 inputs."""
        return self.predict(inputs).classes

    def start_evaluation(self, split: str) -> None:
        """Called before a split is evaluated (stochastic models reset their generators)."""

    def forward_times(self, times: torch.Tensor, start: int = 0, stop: int | None = None):
        for block in self.blocks[start:stop]:
            times = block.forward_times(times)
        return times

    def forward_final(self, final: torch.Tensor, start: int = 0, stop: int | None = None):
        for block in self.blocks[start:stop]:
            final = block.forward_final(final)
        return final

    def node_shapes(self, input_shape) -> list:
        shapes = [tuple(input_shape)]
        for block in self.blocks:
            shapes.append(tuple(block.output_shape(shapes[-1])))
        return shapes

    def inference_macs(self, input_shape) -> int:
        """Multiply-adds of one inference (one convolution per layer on final maps)."""
        return sum(block.macs(shape) for block, shape in zip(self.blocks, self.node_shapes(input_shape)))

    def stdp_layers(self) -> list:
        """Every STDP-trained conv layer, in forward order (for feature images)."""
        return [layer for block in self.blocks for layer in block.stdp_layers()]

    def activation_traces(self, inputs: torch.Tensor) -> dict:
        """Per-layer activity of one sample for plots: [C, H, W] spike times, or [neurons, T]."""
        return {}

    def feature_images(self) -> dict:
        """Learned features as images per layer ([N, h, w]), or {}."""
        return {}

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def hyperparameters(self) -> dict:
        return {**dataclasses.asdict(self.config), **(self.readout or {})}


class SpikingModel(NetworkModel):
    """Convolutional STDP / R-STDP models: blocks added with `add_block` in forward order (so
    seeded weights are drawn in a fixed order), the last one a decision head."""

    def add_block(self, block: nn.Module) -> nn.Module:
        self.blocks.append(block)
        return block

    @property
    def head(self):
        return self.blocks[-1]

    def forward_final(self, final: torch.Tensor, start: int = 0, stop: int | None = None):
        """Final map of node `stop` (default: the head's input) from the final map of node
        `start` (one convolution per layer)."""
        return super().forward_final(final, start, len(self.blocks) - 1 if stop is None else stop)

    encoded_input = False           # node 0 is spike times: forward_final takes its final map

    @property
    def predict_needs(self) -> str:
        """A head that reads spike times (a latency readout, a first-spike decision) needs
        them from node 0 on."""
        return getattr(self.head, "needs", "final")

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, start: int = 0, final: bool = False) -> Prediction:
        """Decisions from node `start` (spike times, or a final map when `final`)."""
        if self.predict_needs == "times":
            if final:
                raise ValueError("this model's head reads spike times, not final maps")
            return self.head.predict(self.forward_times(inputs, start, len(self.blocks) - 1))
        x = inputs.float() if final else st.final_map(inputs, self.time_steps)
        return self.head.predict(self.forward_final(x, start))

    def feature_images(self) -> dict:
        """Every STDP conv layer's first 100 features projected back to pixel space through the
        conv/pool chain in front of it and the front end's filters (parallel branches end the
        chain): {layer name: [N, h, w]}; {} without a filter front end."""
        from spiking.visualization import project_through_filters, reconstruct_features
        filters = getattr(self.frontend.build(), "filter", None)
        if filters is None:
            return {}
        images, stack = {}, []
        for block in self.blocks:
            layers = block.stdp_layers()
            for layer in layers:
                chain = stack + [("conv", layer.conv.weight)]
                images[layer.name] = project_through_filters(reconstruct_features(chain)[:100],
                                                             filters.kernels).numpy()
            if layers != [block]:
                break
            stack += [("conv", block.conv.weight)]
            if block.spec.pool > 1:
                stack.append(("pool", block.spec.pool, block.spec.pool_stride or block.spec.pool))
        return images

    def activation_traces(self, inputs: torch.Tensor) -> dict:
        """First-spike times [C, H, W] of the input and of every block before the head."""
        traces = {"input": inputs[0].cpu().numpy()}
        x = inputs
        for index, block in enumerate(self.blocks[:-1]):
            x = block.forward_times(x)
            traces[getattr(block, "name", f"node{index + 1}")] = x[0].cpu().numpy()
        return traces

