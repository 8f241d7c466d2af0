"""S1C1 front end: image -> DoG filter bank -> local normalisation -> latency spike times.

The encoded form of an image is its first-spike times, uint8 `[K, H', W']` with `T` meaning
"never" (the cumulative wave `[T, K, H', W']` is `spiking.times.times_to_wave` of it).
`encode` runs any front end (this one, or those of `frontends.py`) in batches; the on-disk
cache of encoded datasets is `encoding_cache.EncodingCache`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import torch
import torch.nn as nn

from spiking import functional as sf
from spiking.encoding import latency_times
from spiking.filters import DoGKernel, Filter
from spiking.settings import MAX_TIME_STEPS, require, setting, settings
from utils import fault_point

MAX_WINDOW = 64

# (window, sigma1, sigma2): on- and off-centre pairs at three scales, in this channel order
MNIST_DOG = ((3, 3 / 9, 6 / 9), (3, 6 / 9, 3 / 9), (7, 7 / 9, 14 / 9), (7, 14 / 9, 7 / 9),
             (13, 13 / 9, 26 / 9), (13, 26 / 9, 13 / 9))
FORMAT_VERSION = 1


@settings
class FrontEnd:
    """Front-end parameters (spec section 3 defaults: the MNIST S1C1 of Mozafari et al.).

    Images in [0, 1] are multiplied by `scale`, filtered by the DoG bank with zero padding
    `padding`, responses below `threshold` are zeroed, each channel is divided by its local mean
    over a `(2 * normalization_radius + 1)^2` box, and the result is latency-coded in
    `time_steps` steps.

    `kind="events"` (event-camera data such as `--dataset nmnist`): no filtering; the input's
    channels are first-event maps (`event_recordings.first_event_maps`: OFF, ON) binned into `time_steps`
    steps (`frontends.EventBins`); the DoG fields are then unused.
    """
    kernels: tuple = MNIST_DOG
    padding: int = setting(6, low=0, high=MAX_WINDOW)
    threshold: float = setting(50.0, low=0)
    normalization_radius: int = setting(8, low=0, high=MAX_WINDOW)
    time_steps: int = setting(15, low=1, high=MAX_TIME_STEPS)
    scale: float = setting(255.0, low=0)
    kind: str = setting("dog", choices=("dog", "events"))

    def check(self) -> None:
        require(len(self.kernels) >= 1 and all(
            isinstance(k, tuple) and len(k) == 3 and isinstance(k[0], int) and 1 <= k[0] <= MAX_WINDOW
            and k[1] > 0 and k[2] > 0 for k in self.kernels),
            f"kernels must be (window, sigma1, sigma2) triples with a whole window in [1, {MAX_WINDOW}] "
            f"and sigmas > 0, got {self.kernels!r}")

    def key(self) -> str:
        """A short stable hash of every parameter (names the on-disk cache)."""
        fields = dataclasses.asdict(self)
        if fields["kind"] == "dog":     # the keys of caches written before event inputs existed
            del fields["kind"]
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(f"v{FORMAT_VERSION}:{text}".encode()).hexdigest()[:16]

    def output_shape(self, input_shape) -> tuple[int, int, int]:
        """Encoded shape of one image of shape (H, W) or (C, H, W)."""
        channels, height, width = (1, *input_shape) if len(input_shape) == 2 else input_shape
        if self.kind == "events":
            return (channels, height, width)
        window = max(k[0] // 2 * 2 + 1 for k in self.kernels)
        return (channels * len(self.kernels), height + 2 * self.padding - window + 1,
                width + 2 * self.padding - window + 1)

    def build(self) -> nn.Module:
        if self.kind == "events":
            from frontends import EventBins
            return EventBins(self.time_steps)
        return S1C1(self)


class S1C1(nn.Module):
    """The front end as a module. Shape: images [B, C, H, W] in [0, 1] -> uint8 [B, K*C, H', W']."""

    def __init__(self, config: FrontEnd = FrontEnd()):
        super().__init__()
        self.config = config
        self.filter = Filter([DoGKernel(*k) for k in config.kernels], padding=config.padding,
                             thresholds=config.threshold)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        responses = self.filter(images.float() * self.config.scale)
        normalised = sf.local_normalization(responses, self.config.normalization_radius)
        return latency_times(normalised, self.config.time_steps)


def as_image_batch(images) -> torch.Tensor:
    """uint8 [N, H, W] / [N, C, H, W] (0..255) or float in [0, 1] -> float [N, C, H, W] in [0, 1];
    tabular features [N, F] are returned as float, unscaled."""
    array = np.asarray(images)
    # a read-only array (a memory-mapped dataset) is copied: torch cannot wrap it safely
    images = torch.as_tensor(array if array.flags.writeable else array.copy())
    if images.dim() == 2:
        return images.float()
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(f"images must be [N, H, W] or [N, C, H, W], got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float()


@torch.no_grad()
def encode(images, config: FrontEnd, batch_size: int = 1000, device="cpu",
           progress=None) -> np.ndarray:
    """Encode a whole image array. Returns uint8 spike times [N, K*C, H', W'] (numpy).

    `progress` is an optional callable receiving the number of images done per batch.
    """
    front = config.build().to(device)
    count = len(images)
    shape = None
    out = None
    for start in range(0, count, batch_size):
        batch = as_image_batch(images[start:start + batch_size]).to(device)
        if not torch.isfinite(batch).all():
            raise ValueError(f"images {start}..{start + len(batch) - 1} contain NaN or infinite pixels")
        times = front(batch).cpu().numpy()
        if out is None:
            shape = times.shape[1:]
            out = np.empty((count,) + shape, dtype=np.uint8)
        out[start:start + len(batch)] = times
        fault_point("encode")
        if progress is not None:
            progress(len(batch))
    if out is None:
        raise ValueError("cannot encode an empty image set")
    return out
