"""S1C1 front end: image -> DoG filter bank -> local normalisation -> latency spike times.

The encoded form of an image is its first-spike times, uint8 `[K, H', W']` with `T` meaning
"never" (the cumulative wave `[T, K, H', W']` is `spiking.times.times_to_wave` of it).
`encode` runs the front end in batches; `EncodingCache` keeps whole encoded datasets on disk,
keyed by the dataset and every front-end parameter, so later stages and runs never re-encode.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os

import numpy as np
import torch
import torch.nn as nn

from spiking import functional as sf
from spiking.encoding import latency_times
from spiking.filters import DoGKernel, Filter
from spiking.settings import MAX_COUNT, MAX_TIME_STEPS, require, setting, settings
from utils import atomic_write_json, fault_point, fsync_replace

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
    """
    kernels: tuple = MNIST_DOG
    padding: int = setting(6, low=0, high=MAX_WINDOW)
    threshold: float = setting(50.0, low=0)
    normalization_radius: int = setting(8, low=0, high=MAX_WINDOW)
    time_steps: int = setting(15, low=1, high=MAX_TIME_STEPS)
    scale: float = setting(255.0, low=0)

    def check(self) -> None:
        require(len(self.kernels) >= 1 and all(
            isinstance(k, tuple) and len(k) == 3 and isinstance(k[0], int) and 1 <= k[0] <= MAX_WINDOW
            and k[1] > 0 and k[2] > 0 for k in self.kernels),
            f"kernels must be (window, sigma1, sigma2) triples with a whole window in [1, {MAX_WINDOW}] "
            f"and sigmas > 0, got {self.kernels!r}")

    def key(self) -> str:
        """A short stable hash of every parameter (names the on-disk cache)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(f"v{FORMAT_VERSION}:{text}".encode()).hexdigest()[:16]

    def output_shape(self, input_shape) -> tuple[int, int, int]:
        """Encoded shape of one image of shape (H, W) or (C, H, W)."""
        channels, height, width = (1, *input_shape) if len(input_shape) == 2 else input_shape
        window = max(k[0] // 2 * 2 + 1 for k in self.kernels)
        return (channels * len(self.kernels), height + 2 * self.padding - window + 1,
                width + 2 * self.padding - window + 1)

    def build(self) -> "S1C1":
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
    images = torch.as_tensor(np.asarray(images))
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


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class EncodingCache:
    """Encoded datasets on disk: `<root>/<name>-<frontend key>.npy` plus a `.json` manifest.

    The manifest records the front-end parameters, the shape and the file's sha256; a file
    whose manifest is missing, names other parameters or does not match its checksum is
    reported and rebuilt, never used. Loaded arrays are memory-mapped (read-only).
    """

    def __init__(self, root: str):
        self.root = root

    def paths(self, name: str, config: FrontEnd) -> tuple[str, str]:
        stem = os.path.join(self.root, f"{name}-{config.key()}")
        return stem + ".npy", stem + ".json"

    @contextlib.contextmanager
    def lock(self, name: str, config: FrontEnd):
        """Hold `<entry>.lock` (an advisory lock): processes sharing a cache (a parallel sweep,
        data-parallel ranks) encode an entry once; the others wait, then load it."""
        try:
            import fcntl
        except ImportError:                 # no advisory locks: concurrent writers stay atomic
            yield
            return
        try:
            os.makedirs(self.root, exist_ok=True)
            handle = open(self.paths(name, config)[0] + ".lock", "a")
        except OSError:                     # an unwritable cache folder: no lock (and no cache)
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load(self, name: str, config: FrontEnd, source_id: str, expected_count: int,
             warn=print) -> np.ndarray | None:
        data_path, meta_path = self.paths(name, config)
        if not os.path.exists(data_path):
            return None
        try:
            with open(meta_path) as handle:
                meta = json.load(handle)
            if meta.get("frontend") != json.loads(json.dumps(dataclasses.asdict(config))):
                raise ValueError("it was built with other front-end parameters")
            if meta.get("source") != source_id or meta.get("count") != expected_count:
                raise ValueError("it was built from other source data")
            if _sha256(data_path) != meta.get("sha256"):
                raise ValueError("its checksum does not match (truncated or corrupted)")
            array = np.load(data_path, mmap_mode="r")
            if array.dtype != np.uint8 or list(array.shape) != meta.get("shape"):
                raise ValueError("its shape or type does not match its manifest")
            return array
        except (OSError, ValueError, json.JSONDecodeError) as error:
            warn(f"encoding cache {os.path.basename(data_path)} is stale or damaged ({error}); rebuilding")
            return None

    def save(self, name: str, config: FrontEnd, source_id: str, array: np.ndarray) -> np.ndarray:
        """Write atomically (temporary file, fsync, rename), manifest last; return a memmap."""
        os.makedirs(self.root, exist_ok=True)
        data_path, meta_path = self.paths(name, config)
        for leftover in glob.glob(f"{data_path}.tmp*"):          # from a writer that was killed
            os.remove(leftover)
        temporary = f"{data_path}.tmp{os.getpid()}"
        with open(temporary, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array))
        fsync_replace(temporary, data_path)
        atomic_write_json(meta_path, {"frontend": dataclasses.asdict(config), "source": source_id,
                                      "count": int(len(array)), "shape": list(array.shape),
                                      "sha256": _sha256(data_path), "format": FORMAT_VERSION})
        return np.load(data_path, mmap_mode="r")
