"""The front ends other than S1C1: raw grey levels (`PixelInput`, for models that encode per time
step themselves) and Gaussian receptive fields with latency coding (`ReceptiveFields`, for tabular
features such as Iris).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import torch
import torch.nn as nn

from s1c1 import FORMAT_VERSION
from spiking.settings import MAX_COUNT, MAX_TIME_STEPS, require, setting, settings


@settings
class PixelInput:
    """No spike coding at the front end: the image's grey levels (0..255) as uint8, flattened.
    Models that encode per time step (a random mask, Bernoulli rates) start from these."""
    name: str = setting("pixels", choices=("pixels",))
    time_steps: int = setting(0, choices=(0,))

    def key(self) -> str:
        return hashlib.sha256(f"v{FORMAT_VERSION}:pixels".encode()).hexdigest()[:16]

    def output_shape(self, input_shape) -> tuple[int]:
        return (int(np.prod(input_shape)),)

    def build(self) -> nn.Module:
        return _Pixels()


class _Pixels(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.flatten(1).clamp(0, 1) * 255).round().to(torch.uint8)


@settings
class ReceptiveFields:
    """Gaussian receptive fields with latency coding, for tabular features (itsadeepizza2023).

    Each feature drives `fields` neurons with centres evenly spaced over its `ranges` entry
    and response `g = exp(-(x - centre)^2 / (2 sigma^2))`; a neuron with `g >= threshold` fires
    once at `round((1 - g) * T)` (the best match first), the others never (T).
    """
    fields: int = setting(25, low=1, high=MAX_COUNT)
    sigma: float = setting(0.5, low=1e-6)
    ranges: tuple = ((4.0, 8.0), (2.0, 4.5), (1.0, 7.0), (0.0, 2.5))    # Iris, as the original
    threshold: float = setting(0.01, low=0, high=1)
    time_steps: int = setting(100, low=1, high=MAX_TIME_STEPS)

    def check(self) -> None:
        require(len(self.ranges) >= 1 and all(isinstance(r, tuple) and len(r) == 2 and r[0] <= r[1]
                                               for r in self.ranges),
                f"ranges must be (low, high) pairs, one per input feature, got {self.ranges!r}")

    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(f"v{FORMAT_VERSION}:fields:{text}".encode()).hexdigest()[:16]

    def output_shape(self, input_shape) -> tuple[int]:
        if len(input_shape) != 1 or input_shape[0] != len(self.ranges):
            raise ValueError(f"receptive fields are set up for {len(self.ranges)} features, got input {input_shape}")
        return (len(self.ranges) * self.fields,)

    def build(self) -> nn.Module:
        return _Fields(self)


class _Fields(nn.Module):
    def __init__(self, config: ReceptiveFields):
        super().__init__()
        self.config = config
        centres = torch.stack([torch.linspace(lo, hi, config.fields, dtype=torch.float64)
                               for lo, hi in config.ranges])
        self.register_buffer("centres", centres)                           # [F, fields]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return gaussian_field_times(features, self.centres, self.config.sigma, self.config.threshold,
                                    self.config.time_steps)


def gaussian_field_times(features: torch.Tensor, centres: torch.Tensor, sigma: float,
                         threshold: float, time_steps: int) -> torch.Tensor:
    """Spike times of Gaussian receptive fields. Shape: [B, F], centres [F, N] -> uint8 [B, F * N]."""
    if features.dim() != 2 or features.shape[1] != centres.shape[0]:
        raise ValueError(f"features must be [B, {centres.shape[0]}], got {tuple(features.shape)}")
    response = torch.exp(-(features.double().unsqueeze(2) - centres) ** 2 / (2 * sigma ** 2))
    times = torch.round((1 - response) * time_steps)
    times = torch.where(response >= threshold, times, float(time_steps))
    return times.flatten(1).to(torch.uint8)


EVENT_NEVER = 255       # the first-event level of a pixel without events (event_recordings.first_event_maps)


class EventBins(nn.Module):
    """First-event maps -> first-spike times: a level v in 0..254 (the first event's time as a
    fraction v / 255 of the recording) spikes at step floor(v * T / 255); 255 (no event) never
    spikes (T). Shape: [B, C, H, W] in [0, 1] (levels / 255, as `s1c1.encode` passes uint8
    images) -> uint8 [B, C, H, W] in [0, T]."""

    def __init__(self, time_steps: int):
        super().__init__()
        self.time_steps = time_steps

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        levels = (maps * 255).round()
        steps = torch.div(levels * self.time_steps, 255, rounding_mode="floor")
        return torch.where(levels >= EVENT_NEVER, self.time_steps, steps).to(torch.uint8)


@settings
class GaborFrontEnd:
    """The S1C1 front end of Mozafari et al. 2018's shallow network (mozafari2018_shallow).

    Images in [0, 1] times `scale` -> absolute responses of a bank of `window` x `window` Gabor
    filters at `orientations` (degrees, zero padding `padding`) -> max pooling (`pool`,
    `pool_stride`, `pool_padding`) -> lateral intensity inhibition
    (`spiking.functional.intensity_lateral_inhibition`, factors by Chebyshev distance) ->
    rank-order latency coding in `time_steps` steps -> pointwise inhibition (at each position
    only the earliest orientation spikes; the lowest index among equally early ones). Output
    uint8 [orientations, H', W']. The order and the defaults are SpykeTorch's MozafariShallow.py
    (Caltech: pooling 7 stride 6; ETH-80 and NORB: 5 stride 4).
    """
    orientations: tuple = (67.5, 112.5, 157.5, 202.5)
    window: int = setting(5, low=1, high=MAX_COUNT)
    padding: int = setting(0, low=0, high=MAX_COUNT)
    lateral_inhibition: tuple = (0.15, 0.12, 0.1, 0.07, 0.05)
    pool: int = setting(7, low=1, high=MAX_COUNT)
    pool_stride: int = setting(6, low=1, high=MAX_COUNT)
    pool_padding: int = setting(0, low=0, high=MAX_COUNT)
    time_steps: int = setting(15, low=1, high=MAX_TIME_STEPS)
    scale: float = setting(1.0, low=0)

    def check(self) -> None:
        require(len(self.orientations) >= 1 and all(isinstance(o, (int, float)) for o in self.orientations),
                f"orientations must be angles in degrees, got {self.orientations!r}")
        require(all(isinstance(p, (int, float)) and p >= 0 for p in self.lateral_inhibition),
                f"lateral_inhibition must be non-negative factors, got {self.lateral_inhibition!r}")
        require(2 * self.pool_padding <= self.pool,
                f"pool_padding must be <= pool / 2 ({self.pool}), got {self.pool_padding}")

    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        # "pool-first": encodings made before pooling moved ahead of the lateral inhibition differ
        return hashlib.sha256(f"v{FORMAT_VERSION}:gabor-pool-first:{text}".encode()).hexdigest()[:16]

    def output_shape(self, input_shape) -> tuple[int, int, int]:
        height, width = input_shape[-2:]
        size = [s + 2 * self.padding - self.window + 1 for s in (height, width)]
        size = [(s + 2 * self.pool_padding - self.pool) // self.pool_stride + 1 for s in size]
        return (len(self.orientations), *size)

    def build(self) -> nn.Module:
        return _GaborS1C1(self)


class _GaborS1C1(nn.Module):
    def __init__(self, config: GaborFrontEnd):
        super().__init__()
        from spiking.filters import Filter, GaborKernel
        from spiking.functional import intensity_lateral_inhibition_kernel
        self.config = config
        self.filter = Filter([GaborKernel(config.window, o) for o in config.orientations],
                             padding=config.padding, use_abs=True)
        self.register_buffer("inhibition", intensity_lateral_inhibition_kernel(list(config.lateral_inhibition)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F
        from spiking import times as st
        from spiking.encoding import latency_times
        from spiking.functional import intensity_lateral_inhibition
        c = self.config
        responses = self.filter(images.float() * c.scale)
        pooled = F.max_pool2d(responses, c.pool, c.pool_stride, c.pool_padding)
        if len(c.lateral_inhibition):
            pooled = intensity_lateral_inhibition(pooled, self.inhibition)
        times = latency_times(pooled, c.time_steps)
        return st.pointwise_inhibition_times(times, torch.ones(times.shape, device=times.device), c.time_steps)[0]
