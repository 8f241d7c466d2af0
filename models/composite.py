"""Blocks combining hidden layers: parallel branches (inception2024) and a layer with a skip path
(resnet2024). Same two forms as every block (`models.layers`): `forward_times` and
`forward_final`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from spiking import engine
from spiking import functional as sf
from spiking import times as st
from spiking.layers import Convolution
from spiking.settings import require

from .layers import HiddenLayer, pad4


class Branches(nn.Module):
    """Parallel hidden layers on one input, each output zero-padded to a common size,
    concatenated on channels, then max-pooled (inception2024)."""

    def __init__(self, branches: list, out_pads: list, pool: int, time_steps: int):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.out_pads, self.pool, self.time_steps = list(out_pads), pool, time_steps

    def forward_times(self, times):
        parts = [st.pad_times(b.fire_times(times), pad4(p), self.time_steps)
                 for b, p in zip(self.branches, self.out_pads)]
        return st.pool_times(torch.cat(parts, dim=1), self.pool)

    def forward_final(self, final):
        parts = [F.pad(b.fire_final(final), pad4(p)) for b, p in zip(self.branches, self.out_pads)]
        return F.max_pool2d(torch.cat(parts, dim=1), self.pool)

    def stdp_layers(self) -> list:
        return list(self.branches)

    def macs(self, shape) -> int:
        return sum(b.macs(shape) for b in self.branches)

    def output_shape(self, shape):
        channels, sizes = 0, set()
        for branch, pad in zip(self.branches, self.out_pads):
            _, height, width = branch.output_shape(shape)
            channels += branch.spec.out_channels
            if min(height, width) < 1:          # this branch does not fit the input
                return (channels, height, width)
            sizes.add((height + 2 * pad, width + 2 * pad))
        if len(sizes) != 1:
            raise ValueError(f"branch outputs differ in size after padding: {sorted(sizes)}")
        height, width = sizes.pop()
        return (channels, height // self.pool, width // self.pool)


def require_merged_channels(main, merge: str, decision) -> None:
    """A config's check that the decision after a skip block (main layer spec `main`, merged by
    `merge`) reads the channels the merge gives it (concat: the main layer's and its input's)."""
    merged = main.out_channels + (main.in_channels if merge == "concat" else 0)
    require(decision.in_channels == merged, f"merge={merge} gives the decision {merged} input channels: "
                                            f"set decision.in_channels={merged}, got {decision.in_channels}")


class Residual(nn.Module):
    """A hidden layer with a skip path, merged, then max-pooled. `merge`:

    - "concat": the main layer's spike maps and the block's input maps side by side on channels
      (the skip carries the input unchanged; resnet2024's default);
    - "or": an untrained 1x1 conv of the block's input firing above `skip_threshold`, merged with
      the main layer's spikes by OR (the earlier of the two spike times; the seed's design,
      with the wave kept cumulative);
    - "none": the main layer alone (no skip path)."""
    MERGES = ("concat", "or", "none")

    def __init__(self, main: HiddenLayer, skip_threshold: float, pool: int, time_steps: int, merge: str = "or"):
        super().__init__()
        if main.spec.pool != 1:
            raise ValueError("the main layer of a Residual block pools after the merge (pool=1)")
        if merge not in self.MERGES:
            raise ValueError(f"merge must be one of {', '.join(self.MERGES)}, got {merge!r}")
        self.main, self.skip_threshold, self.pool, self.time_steps = main, skip_threshold, pool, time_steps
        self.merge = merge
        if merge == "or":
            self.skip = Convolution(main.spec.in_channels, main.spec.out_channels, 1,
                                    main.spec.weight_mean, main.spec.weight_std)
        offset = main.spec.pad - (main.spec.kernel_size - 1) // 2
        if offset != 0:
            raise ValueError("the main layer must preserve the spatial size (pad = (k - 1) / 2)")

    def forward_times(self, times):
        fired = self.main.fire_times(times)
        if self.merge == "or":
            fired = torch.minimum(fired, engine.spike_times(times, self.skip.weight, self.skip_threshold,
                                                            self.time_steps))
        elif self.merge == "concat":
            fired = torch.cat([fired, times], dim=1)
        return st.pool_times(fired, self.pool)

    def forward_final(self, final):
        fired = self.main.fire_final(final)
        if self.merge == "or":
            fired = torch.maximum(fired, (sf.conv2d(final, self.skip.weight) > self.skip_threshold).to(final.dtype))
        elif self.merge == "concat":
            fired = torch.cat([fired, final], dim=1)
        return F.max_pool2d(fired, self.pool)

    def stdp_layers(self) -> list:
        return [self.main]

    def macs(self, shape) -> int:
        _, height, width = shape
        skip = self.skip.weight.numel() * height * width if self.merge == "or" else 0
        return self.main.macs(shape) + skip

    def output_shape(self, shape):
        channels, height, width = self.main.output_shape(shape)
        if self.merge == "concat":
            channels += shape[0]
        return (channels, height // self.pool, width // self.pool)
