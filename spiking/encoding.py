"""Intensity-to-latency (rank-order) coding."""
from __future__ import annotations

import torch
import torch.nn as nn

from ._checks import check_int, check_rank
from .times import times_to_wave


def latency_times(intensities: torch.Tensor, time_steps: int) -> torch.Tensor:
    """First-spike times of rank-order coding; `time_steps` means "never".

    Per sample, over all `C*H*W` values together: `n` = number of non-zero values,
    `bin = floor(n / T)`; values are ranked in descending order (torch's default descending sort,
    as SpykeTorch) and the value of rank `r` spikes at step `floor(r / bin)` when `r < T * bin`,
    so the `n mod T` weakest never spike. When `0 < n < T` (where SpykeTorch crashes) every
    non-zero value gets its own step in rank order; an all-zero sample never spikes.

    Shape: intensities [B, C, H, W] (non-negative) -> uint8 [B, C, H, W] in [0, T].
    """
    check_rank(intensities, 4, "intensities", "[B, C, H, W]")
    steps = check_int(time_steps, "time_steps", 1)
    if steps > 255:
        raise ValueError(f"time_steps must be <= 255 (spike times are stored as uint8), got {steps}")
    if not torch.isfinite(intensities).all():
        raise ValueError("intensities contain NaN or infinite values")
    if (intensities < 0).any():
        raise ValueError("intensities must be non-negative for latency coding")
    batch = intensities.shape[0]
    flat = intensities.reshape(batch, -1)
    count = (flat != 0).sum(dim=1, keepdim=True)                 # n, [B, 1]
    bin_size = count // steps
    # rank r spikes at r // bin below T * bin; with 0 < n < T each value gets its own step
    limit = torch.where(bin_size > 0, bin_size * steps, count)
    order = torch.sort(flat, dim=1, descending=True).indices
    rank = torch.arange(flat.shape[1], device=flat.device).unsqueeze(0)
    sorted_times = torch.where(rank < limit, rank // bin_size.clamp(min=1), steps)
    times = torch.empty_like(sorted_times).scatter_(1, order, sorted_times)
    return times.to(torch.uint8).view_as(intensities)


def intensity_to_latency(intensities: torch.Tensor, time_steps: int,
                         to_spike: bool = False) -> torch.Tensor:
    """Rank-order coding into a cumulative wave (see `latency_times` for the ranks and bins).

    Step `t` holds every value ranked in the first `(t + 1) * bin` positions. With `to_spike`
    false (as in SpykeTorch) those entries carry their intensity, otherwise 1; all others are 0.

    Shape: intensities [B, C, H, W] -> wave [B, T, C, H, W] float32.
    """
    times = latency_times(intensities, time_steps)
    wave = times_to_wave(times, time_steps)
    if not to_spike:
        wave = wave * intensities.float().unsqueeze(1)
    return wave


class Intensity2Latency(nn.Module):
    """Module wrapper of `intensity_to_latency`."""

    def __init__(self, number_of_spike_bins: int, to_spike: bool = False):
        super().__init__()
        self.time_steps = check_int(number_of_spike_bins, "number_of_spike_bins", 1)
        self.to_spike = bool(to_spike)

    def forward(self, intensities: torch.Tensor) -> torch.Tensor:
        return intensity_to_latency(intensities, self.time_steps, self.to_spike)
