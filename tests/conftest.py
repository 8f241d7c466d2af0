"""Shared generators of small random spike data (cumulative waves, potentials with ties)."""
from __future__ import annotations

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from spiking import functional as sf  # noqa: E402
from spiking.times import times_to_wave  # noqa: E402


def random_times(batch, channels, height, width, steps, never=0.3, generator=None):
    """Random first-spike times, uint8, with a fraction of neurons that never spike (T)."""
    times = torch.randint(0, steps, (batch, channels, height, width), generator=generator)
    silent = torch.rand(times.shape, generator=generator) < never
    return torch.where(silent, torch.full_like(times, steps), times).to(torch.uint8)


def random_wave(batch, channels, height, width, steps, never=0.3, generator=None):
    return times_to_wave(random_times(batch, channels, height, width, steps, never, generator), steps)


def integer_weights(features, channels, k, generator=None, high=3):
    """Small integer weights: potentials are exact integers, so ties are frequent."""
    return torch.randint(0, high, (features, channels, k, k), generator=generator).float()


def conv_potentials(wave, weight):
    b, t = wave.shape[:2]
    return sf.conv2d(wave.flatten(0, 1), weight).unflatten(0, (b, t))


@pytest.fixture(params=["compiled", "tensor"])
def exact_path(request, monkeypatch):
    """Both exact paths where the CPU has two: the compiled loop (`spiking.compiled`, the CPU's
    default) and the tensor path (CUDA's, or without numba)."""
    from spiking import compiled
    if request.param == "compiled" and not compiled.ENABLED:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(compiled, "ENABLED", request.param == "compiled")
    return request.param


def whole_map_only(geometry, exact_path):
    """Skip the compiled variant of a decision geometry it does not handle (several positions)."""
    if exact_path == "compiled" and geometry != (4, 0):
        pytest.skip("the compiled R-STDP loop reads one position")


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


BATCHES = (1, 7, 32, 128)


def drive(stage, inputs, labels, batch, epochs=1):
    """The trainer's loop: batches that never straddle a rate change or a window."""
    counts = []
    for _ in range(epochs):
        stage.start_epoch(len(inputs))
        position = 0
        while position < len(inputs):
            size = min(batch, stage.limit(), len(inputs) - position)
            stats = stage.step(inputs[position:position + size], labels[position:position + size])
            counts.append({k: int(v) for k, v in stats.items()})
            position += size
        stage.end_epoch()
    return counts
