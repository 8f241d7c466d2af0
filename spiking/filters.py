"""Filter kernels (difference of Gaussians, Gabor) and a thresholded filter bank.

Kernel objects are callables: `DoGKernel(7, 1, 2)()` returns the float32 kernel.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn as nn

from ._checks import check_int, check_rank
from .functional import conv2d


def _grid(window_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets -floor(w/2) .. floor(w/2), float64 (odd w gives w x w)."""
    half = window_size // 2
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    return np.meshgrid(offsets, offsets, indexing="ij")


def _normalise(kernel: np.ndarray) -> torch.Tensor:
    kernel = kernel - kernel.mean()
    kernel = kernel / kernel.max()
    return torch.from_numpy(kernel).float()


class DoGKernel:
    """Difference of Gaussians, on-centre when `sigma1 < sigma2`.

    `g_i = exp(-(x^2 + y^2) / (2 sigma_i^2)) / sigma_i^2`, `dog = (g_1 - g_2) / (2 pi)`,
    computed in float64, mean-subtracted, divided by its maximum, returned as float32.
    """

    def __init__(self, window_size: int, sigma1: float, sigma2: float):
        self.window_size = check_int(window_size, "window_size", 1)
        if not (sigma1 > 0 and sigma2 > 0):
            raise ValueError(f"DoG sigmas must be positive, got {sigma1}, {sigma2}")
        self.sigma1, self.sigma2 = float(sigma1), float(sigma2)

    def __call__(self) -> torch.Tensor:
        x, y = _grid(self.window_size)
        r2 = x ** 2 + y ** 2
        g1 = np.exp(-r2 / (2 * self.sigma1 ** 2)) / self.sigma1 ** 2
        g2 = np.exp(-r2 / (2 * self.sigma2 ** 2)) / self.sigma2 ** 2
        return _normalise((g1 - g2) / (2 * math.pi))

    def __repr__(self) -> str:
        return f"DoGKernel({self.window_size}, {self.sigma1:g}, {self.sigma2:g})"


class GaborKernel:
    """Gabor kernel; at 0 degrees the stripes are horizontal.

    `x` is the row offset and `y` the column offset; `theta` is `orientation` in radians;
    `X = x cos(theta) + y sin(theta)`, `Y = -x sin(theta) + y cos(theta)`; `lambda = 2 w / div`,
    `sigma = 0.8 lambda`, `gamma = 0.3`; kernel
    `exp(-(X^2 + gamma^2 Y^2) / (2 sigma^2)) * cos(2 pi X / lambda)`, mean-subtracted and
    max-normalised, float32.
    """

    def __init__(self, window_size: int, orientation: float, div: float = 4.0):
        self.window_size = check_int(window_size, "window_size", 1)
        self.orientation = float(orientation)
        if not div > 0:
            raise ValueError(f"div must be positive, got {div}")
        self.div = float(div)

    def __call__(self) -> torch.Tensor:
        x, y = _grid(self.window_size)
        theta = math.radians(self.orientation)
        wavelength = 2 * self.window_size / self.div
        sigma = 0.8 * wavelength
        gamma = 0.3
        rot_x = x * math.cos(theta) + y * math.sin(theta)
        rot_y = -x * math.sin(theta) + y * math.cos(theta)
        envelope = np.exp(-(rot_x ** 2 + gamma ** 2 * rot_y ** 2) / (2 * sigma ** 2))
        return _normalise(envelope * np.cos(2 * math.pi * rot_x / wavelength))

    def __repr__(self) -> str:
        return f"GaborKernel({self.window_size}, {self.orientation:g}, div={self.div:g})"


class Filter(nn.Module):
    """A bank of 2-D filters with optional thresholds and absolute value.

    Kernels smaller than the largest window are zero-padded (centred) to it and stacked. On
    images `[B, C, H, W]` every input channel is cross-correlated with every kernel (zero padding
    `padding`); output channel `c * K + k` is input channel `c` under kernel `k`, so single-channel
    images give `[B, K, H', W']`. Then responses strictly below the threshold (one scalar or one
    per kernel) become 0, and with `use_abs` every response is replaced by its absolute value.

    Shape: [B, C, H, W] -> [B, C * K, H + 2 padding - w + 1, W + 2 padding - w + 1].
    """

    def __init__(self, filter_kernels, padding: int = 0, thresholds=None, use_abs: bool = False):
        super().__init__()
        kernels = [k() if callable(k) else torch.as_tensor(k, dtype=torch.float32)
                   for k in filter_kernels]
        if not kernels:
            raise ValueError("Filter needs at least one kernel")
        for kernel in kernels:
            check_rank(kernel, 2, "filter kernel", "[w, w]")
        size = max(max(k.shape) for k in kernels)
        padded = []
        for kernel in kernels:
            top = (size - kernel.shape[0]) // 2
            left = (size - kernel.shape[1]) // 2
            canvas = torch.zeros(size, size)
            canvas[top:top + kernel.shape[0], left:left + kernel.shape[1]] = kernel
            padded.append(canvas)
        self.register_buffer("kernels", torch.stack(padded).unsqueeze(1))  # [K, 1, w, w]
        self.padding = check_int(padding, "padding", 0)
        self.use_abs = bool(use_abs)
        count = len(kernels)
        if thresholds is None:
            self.thresholds = None
        else:
            if isinstance(thresholds, numbers.Real):
                values = torch.full((count,), float(thresholds))
            else:
                values = torch.as_tensor(thresholds, dtype=torch.float32).flatten()
                if values.numel() == 1:
                    values = values.expand(count).clone()
                if values.numel() != count:
                    raise ValueError(f"thresholds must be one value or one per kernel ({count}), "
                                     f"got {values.numel()}")
            self.register_buffer("thresholds", values.view(1, count, 1, 1))

    @property
    def number_of_kernels(self) -> int:
        return self.kernels.shape[0]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_rank(input, 4, "input", "[B, C, H, W]")
        b, c, h, w = input.shape
        responses = conv2d(input.reshape(b * c, 1, h, w).float(), self.kernels, self.padding)
        if self.thresholds is not None:
            responses = torch.where(responses < self.thresholds, torch.zeros((), device=input.device),
                                    responses)
        if self.use_abs:
            responses = responses.abs()
        return responses.reshape(b, c * self.number_of_kernels, *responses.shape[-2:])
