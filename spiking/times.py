"""The compact first-spike-time representation and the fast paths built on it.

A cumulative spike wave `[B, T, C, H, W]` is fully described by its first-spike times
`[B, C, H, W]` (uint8, `T` meaning "never"), 15x smaller at T = 15. Because conv weights are
kept non-negative by the learning rules, potentials never decrease in time, so:

- a conv layer followed by `fire(threshold)` is described by each neuron's first crossing step
  and its potential at that step (`conv_fire_times`);
- whether a neuron has spiked by the last step only needs the final cumulative wave, i.e. one
  convolution instead of T (`final_map`, used by inference and R-STDP);
- pointwise inhibition, k-WTA and STDP only need spike times and first-spike potentials.

Every function here gives exactly what the wave functions of `spiking.functional` give on the
equivalent waves (tests compare them); they assume non-negative conv weights. The faster
search-based paths of the training engine are in `spiking.engine`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_int, check_rank, check_same_shape, check_threshold, pair
from .functional import conv2d, select_winners

TIMES = "[B, C, H, W]"


def times_to_wave(times: torch.Tensor, time_steps: int, dtype=torch.float32) -> torch.Tensor:
    """Cumulative binary wave of first-spike times.

    Shape: uint8 [B, C, H, W] -> [B, T, C, H, W], 1 from each neuron's spike time on.
    """
    check_rank(times, 4, "times", TIMES)
    steps = torch.arange(time_steps, device=times.device).view(1, time_steps, 1, 1, 1)
    return (steps >= times.unsqueeze(1)).to(dtype)


def wave_to_times(wave: torch.Tensor) -> torch.Tensor:
    """First-spike times of a cumulative wave: `T - number of spiking steps` (T = never).

    Shape: [B, T, C, H, W] -> uint8 [B, C, H, W].
    """
    check_rank(wave, 5, "wave", "[B, T, C, H, W]")
    steps = wave.shape[1]
    return (steps - (wave > 0).sum(dim=1)).to(torch.uint8)


def final_map(times: torch.Tensor, time_steps: int, dtype=torch.float32) -> torch.Tensor:
    """The last step of the cumulative wave: 1 where the neuron has spiked at all.

    Shape: uint8 [B, C, H, W] -> [B, C, H, W].
    """
    return (times < time_steps).to(dtype)


def pad_times(times: torch.Tensor, pad: tuple[int, int, int, int], time_steps: int) -> torch.Tensor:
    """Zero padding of a wave, `pad = (left, right, top, bottom)`: padded cells never spike."""
    return F.pad(times, tuple(int(p) for p in pad), value=time_steps)


def pool_times(times: torch.Tensor, kernel_size, stride=None, padding=0) -> torch.Tensor:
    """Max pooling of a cumulative wave = earliest spike time of each window.

    Pooling padding never wins (as the wave pooling's -inf padding).

    Shape: uint8 [B, C, H, W] -> uint8 [B, C, H', W'].
    """
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    pooled = -F.max_pool2d(-times.float(), kernel, stride, pair(padding, "padding"))
    return pooled.to(torch.uint8)


def conv_fire_times(times: torch.Tensor, weight: torch.Tensor, threshold: float,
                    time_steps: int, chunk: int | None = None, values: bool = True):
    """Convolve a wave given as spike times and fire at `threshold` (strictly above).

    The direct per-step path: the potentials of step `t` are the convolution of the cumulative
    wave at `t`, one conv call over all `chunk * B` slices of a time chunk. As in SpykeTorch a
    neuron's spike time is `T - (number of steps above threshold)`, which for non-negative
    weights is its first step above threshold; its value is the potential at that step.

    Shape: times uint8 [B, C, H, W], weight [F, C, kh, kw] ->
           (spike times uint8 [B, F, H', W'], first-spike potentials float32 [B, F, H', W'];
            0 where the neuron never spikes); only the spike times when `values` is false.
    """
    check_rank(times, 4, "times", TIMES)
    check_threshold(threshold)
    steps = check_int(time_steps, "time_steps", 1)
    chunk = steps if chunk is None else check_int(chunk, "chunk", 1)
    want_values = values
    out_times = values = None
    for start in range(0, steps, chunk):
        length = min(steps, start + chunk) - start
        step_ids = torch.arange(start, start + length, device=times.device).view(-1, 1, 1, 1, 1)
        wave = (times.unsqueeze(0) <= step_ids).to(weight.dtype)            # [c, B, C, H, W]
        potentials = conv2d(wave.flatten(0, 1), weight).unflatten(0, (length, times.shape[0]))
        above = torch.zeros(potentials.shape[1:], dtype=torch.uint8, device=times.device)
        for step in range(length):          # steps above threshold; per-step adds stay contiguous
            above += potentials[step] > threshold
        if not want_values and start == 0 and length == steps:
            return steps - above, None      # one chunk: the count is the whole story
        if out_times is None:
            out_times = torch.full(above.shape, steps, dtype=torch.uint8, device=times.device)
            values = torch.zeros(above.shape, dtype=potentials.dtype, device=times.device)
        new = (above > 0) & (out_times == steps)
        first = (length - above.long()).clamp_(max=length - 1)               # index inside the chunk
        out_times = torch.where(new, (first + start).to(torch.uint8), out_times)
        if want_values:
            values = torch.where(new, potentials.gather(0, first.unsqueeze(0)).squeeze(0), values)
    return out_times, (values if want_values else None)


def pointwise_inhibition_times(times: torch.Tensor, values: torch.Tensor, time_steps: int):
    """`functional.pointwise_inhibition` on spike times and first-spike potentials.

    At each position only the earliest feature survives (largest value among equally early
    ones, lowest index on exact ties); the others become "never" with value 0.

    Shape: uint8 [B, C, H, W], float [B, C, H, W] -> same two.
    """
    check_same_shape(times, values, "times", "values")
    earliest = times.min(dim=1, keepdim=True).values
    candidate = (times == earliest) & (times < time_steps)
    masked = torch.where(candidate, values, torch.full_like(values, float("-inf")))
    winner = masked.argmax(dim=1, keepdim=True)
    keep = torch.zeros_like(candidate).scatter_(1, winner, True) & candidate
    return (torch.where(keep, times, torch.full_like(times, time_steps)),
            torch.where(keep, values, torch.zeros_like(values)))


def _scores(times: torch.Tensor, values: torch.Tensor, time_steps: int) -> torch.Tensor:
    """SpykeTorch's float32 k-WTA score from spike times and first-spike values, bit for bit with
    the wave path (`functional.get_k_winners`): `v = T * max(value)` per sample, `score = sum
    over spiking steps of (value + v)`, summed step after step in float32 (as the spec's
    reference and the compiled loop do). A reduction such as `.sum` over the time dimension
    would round in an order that depends on the neuron's place in the tensor, so equal spike
    times and values at two positions could score differently and break the tie rule. Values
    of spiking neurons must be positive (above a non-negative threshold).

    Shape: [B, N] (any trailing shape) -> float [B, N...]."""
    spiking = times < time_steps
    truncated = torch.where(spiking, values, 0.0)
    v = truncated.flatten(1).max(dim=1).values.mul_(time_steps)
    term = truncated + v.view((-1,) + (1,) * (values.dim() - 1))
    total = torch.zeros_like(term)
    for step in range(time_steps):
        total += torch.where(times <= step, term, 0.0)
    return total


def winner_scores(times: torch.Tensor, values: torch.Tensor, time_steps: int) -> torch.Tensor:
    """The float32 k-WTA score of `functional.get_k_winners`, bit for bit, from spike times.

    Shape: uint8 [B, C, H, W], float [B, C, H, W] -> float [B, C, H, W].
    """
    return _scores(times, values, time_steps)


def k_winners_times(times: torch.Tensor, values: torch.Tensor, time_steps: int, kwta: int = 1,
                    inhibition_radius: int = 0) -> torch.Tensor:
    """`functional.get_k_winners` on spike times and first-spike potentials.

    Shape: uint8 [B, C, H, W], float [B, C, H, W] -> LongTensor [B, kwta, 3].
    """
    kwta = check_int(kwta, "kwta", 1)
    inhibition_radius = check_int(inhibition_radius, "inhibition_radius", 0)
    return select_winners(winner_scores(times, values, time_steps), kwta, inhibition_radius)


def decision_scores(potentials: torch.Tensor, time_steps: int) -> torch.Tensor:
    """k-WTA scores of a decision layer, which fires only at the last step (`fire(pot)`).

    Only neurons with a positive final potential spike; `score = value + T * max(value)`.

    Shape: final potentials [B, F, H, W] -> scores [B, F, H, W].
    """
    spiking = potentials > 0
    truncated = torch.where(spiking, potentials, torch.zeros_like(potentials))
    v = truncated.flatten(1).max(dim=1).values.mul_(time_steps).view(-1, 1, 1, 1)
    return torch.where(spiking, truncated + v, torch.zeros_like(potentials))
