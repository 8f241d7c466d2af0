"""Layers holding configuration and weights; the arithmetic lives in `functional`."""
from __future__ import annotations

import torch
import torch.nn as nn

from . import functional as sf
from ._checks import check_int, check_rank, pair


class Convolution(nn.Module):
    """Integrate-and-fire convolution: stride 1, no padding, no bias, weights never need grad.

    The potential at step `t` is the valid cross-correlation of the cumulative wave at `t`
    (non-leaky, no reset; with non-negative weights, non-decreasing in `t`). Weights are drawn
    once from N(weight_mean, weight_std) into a float32 CPU tensor at construction, so
    `torch.manual_seed(s)` reproduces SpykeTorch's initial weights.

    Shape: spikes [B, T, C, H, W] -> potentials [B, T, F, H - kh + 1, W - kw + 1];
    weight [F, C, kh, kw].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size,
                 weight_mean: float = 0.8, weight_std: float = 0.02):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", 1)
        self.out_channels = check_int(out_channels, "out_channels", 1)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.weight = nn.Parameter(
            torch.empty(self.out_channels, self.in_channels, *self.kernel_size),
            requires_grad=False)
        self.reset_weight(weight_mean, weight_std)

    def reset_weight(self, weight_mean: float = 0.8, weight_std: float = 0.02) -> None:
        """Redraw the weights from N(weight_mean, weight_std)."""
        self.weight.normal_(weight_mean, weight_std)

    def load_weight(self, target: torch.Tensor) -> None:
        """Copy `target` ([F, C, kh, kw]) into the weights."""
        if tuple(target.shape) != tuple(self.weight.shape):
            raise ValueError(f"load_weight expects shape {tuple(self.weight.shape)}, "
                             f"got {tuple(target.shape)}")
        self.weight.copy_(target)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_rank(input, 5, "input", "[B, T, C, H, W]")
        batch, steps, channels, height, width = input.shape
        kh, kw = self.kernel_size
        if channels != self.in_channels or height < kh or width < kw:
            raise ValueError(f"Convolution({self.in_channels}->{self.out_channels}, k={kh}x{kw}) "
                             f"expects [B, T, {self.in_channels}, H>={kh}, W>={kw}], got "
                             f"{tuple(input.shape)}")
        potentials = sf.conv2d(input.flatten(0, 1).to(self.weight.dtype), self.weight)
        return potentials.unflatten(0, (batch, steps))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"


class Pooling(nn.Module):
    """Max pooling of every time slice (see `functional.pooling`)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return sf.pooling(input, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


__all__ = ["Convolution", "Pooling"]
