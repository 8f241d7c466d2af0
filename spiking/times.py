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
equivalent waves (tests compare them); they assume non-negative conv weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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


def im2col_times(times: torch.Tensor, kernel_size) -> torch.Tensor:
    """Receptive fields of every output position as rows (a strided copy, no float expansion).

    Shape: [B, C, H, W] -> [B * H' * W', C * kh * kw], same dtype, rows in (b, row, col) order,
    columns in the weight's (channel, kh, kw) order.
    """
    kh, kw = pair(kernel_size, "kernel_size")
    batch, channels, height, width = times.shape
    rows, cols = height - kh + 1, width - kw + 1
    s = times.stride()
    view = times.as_strided((batch, rows, cols, channels, kh, kw), (s[0], s[2], s[3], s[1], s[2], s[3]))
    return view.reshape(batch * rows * cols, channels * kh * kw)


@dataclass
class Survivors:
    """The pointwise-inhibition survivor of every position: at most one feature per position.

    `times` [B, H, W] int64 (T = nothing spikes there), `features` [B, H, W] int64 (valid where
    times < T), `values` [B, H, W] float (the survivor's potential at its first spike)."""
    times: torch.Tensor
    features: torch.Tensor
    values: torch.Tensor
    num_features: int
    time_steps: int

    def dense(self):
        """As `pointwise_inhibition_times` returns them: uint8 [B, F, H, W] and float [B, F, H, W]."""
        batch, height, width = self.times.shape
        shape = (batch, self.num_features, height, width)
        spiking = (self.times < self.time_steps).unsqueeze(1)
        index = self.features.clamp(min=0).unsqueeze(1)
        out_times = torch.full(shape, self.time_steps, dtype=torch.uint8, device=self.times.device)
        out_times.scatter_(1, index, torch.where(spiking, self.times.unsqueeze(1), self.time_steps).to(torch.uint8))
        values = torch.zeros(shape, dtype=self.values.dtype, device=self.values.device)
        values.scatter_(1, index, torch.where(spiking, self.values.unsqueeze(1), 0.0))
        return out_times, values


def _fields_and_matrix(times: torch.Tensor, weight: torch.Tensor):
    """Receptive-field rows of spike times (uint8 [R, K], a strided copy) and the weight as a
    [K, F16] matrix whose width is padded to a multiple of 16 (GEMMs run markedly faster so;
    zero columns never exceed a non-negative threshold)."""
    features, channels, kh, kw = weight.shape
    batch, _, height, width = times.shape
    rows, cols = height - kh + 1, width - kw + 1
    s = times.stride()
    fields = times.as_strided((batch, rows, cols, channels, kh, kw),
                              (s[0], s[2], s[3], s[1], s[2], s[3])).reshape(batch * rows * cols, -1)
    matrix = weight.new_zeros(fields.shape[1], -(-features // 16) * 16)
    matrix[:, :features] = weight.reshape(features, -1).t()
    return fields, matrix, (batch, rows, cols)


def _spiking_rows(fields: torch.Tensor, matrix: torch.Tensor, threshold: float, time_steps: int):
    """Blocks of the rows whose last-step potential crosses the threshold: yields (row index,
    their fields, their last-step potentials). Only rows holding an input spike are evaluated,
    in blocks of about 4 MB of float fields so the GEMM inputs stay in cache."""
    candidates = torch.nonzero(fields.amin(dim=1) < time_steps).squeeze(1)
    block = max(1024, (1 << 20) // fields.shape[1])
    for start in range(0, candidates.numel(), block):
        index = candidates[start:start + block]
        part = fields.index_select(0, index)
        final = (part < time_steps).to(matrix.dtype) @ matrix
        crossing = final.amax(dim=1) > threshold
        yield index[crossing], part[crossing], final[crossing]


def spike_times(times: torch.Tensor, weight: torch.Tensor, threshold: float, time_steps: int) -> torch.Tensor:
    """Spike times of every neuron of conv + fire (the first output of `conv_fire_times`).

    Positions whose last-step potentials stay at or below threshold never spike; for the others
    the steps above threshold are counted with one GEMM per step over their receptive fields
    (`T - count` is the spike time, as in SpykeTorch). Equal to `conv_fire_times` up to float32
    summation order.

    Shape: times uint8 [B, C, H, W], weight [F, C, kh, kw] -> uint8 [B, F, H', W'].
    """
    check_rank(times, 4, "times", TIMES)
    check_threshold(threshold)
    features = weight.shape[0]
    fields, matrix, shape = _fields_and_matrix(times, weight)
    out = torch.full((fields.shape[0], features), time_steps, dtype=torch.uint8, device=times.device)
    for index, part, _ in _spiking_rows(fields, matrix, threshold, time_steps):
        patches = part.to(matrix.dtype)
        wave = torch.empty_like(patches)
        potentials = matrix.new_empty(patches.shape[0], matrix.shape[1])
        above = torch.zeros(patches.shape[0], features, dtype=torch.uint8, device=times.device)
        for step in range(time_steps):
            torch.sub(step + 1.0, patches, out=wave).clamp_(0, 1)
            torch.mm(wave, matrix, out=potentials)
            above += potentials[:, :features] > threshold
        out[index] = time_steps - above
    batch, rows, cols = shape
    return out.view(batch, rows, cols, features).permute(0, 3, 1, 2).contiguous()


def earliest_spikes(times: torch.Tensor, weight: torch.Tensor, threshold: float,
                    time_steps: int) -> Survivors:
    """Conv + fire + pointwise inhibition in one pass, by bisection in time per position.

    Whether any feature at a position has crossed the threshold by step `t` is monotone in `t`
    (non-negative weights). One evaluation of the last step's potentials (a GEMM over the
    receptive fields that hold any spike) finds the positions that spike at all; for those, a
    binary search over [0, T - 1] finds the earliest step in `ceil(log2(T))` more evaluations,
    instead of T convolutions of every position. At that step the features above threshold are
    exactly those first spiking then, and the largest (lowest index on exact ties) survives, as
    in `functional.pointwise_inhibition`.

    Results equal `pointwise_inhibition_times(*conv_fire_times(...))` up to float32 summation
    order (bit for bit when the sums are exact, e.g. dyadic weights).

    Shape: times uint8 [B, C, H, W], weight [F, C, kh, kw] -> Survivors over [B, H', W'].
    """
    check_rank(times, 4, "times", TIMES)
    check_threshold(threshold)
    features = weight.shape[0]
    fields, matrix, shape = _fields_and_matrix(times, weight)
    count = fields.shape[0]
    high = torch.full((count,), time_steps, dtype=torch.long, device=times.device)
    best = weight.new_zeros(count, matrix.shape[1])
    for index, part, final in _spiking_rows(fields, matrix, threshold, time_steps):
        high[index], best[index] = _bisect_rows(part, final, matrix, threshold, time_steps)
    best = best[:, :features]
    candidates = torch.where(best > threshold, best, float("-inf"))
    winner = candidates.argmax(dim=1)
    values = best.gather(1, winner.unsqueeze(1)).squeeze(1)
    spiking = high < time_steps
    return Survivors(high.view(shape), torch.where(spiking, winner, -1).view(shape),
                     torch.where(spiking, values, 0.0).view(shape), features, time_steps)


def _bisect_rows(fields: torch.Tensor, final: torch.Tensor, matrix: torch.Tensor,
                 threshold: float, time_steps: int):
    """For rows known to cross by the last step (`final` = their last-step potentials): the
    earliest step at which any column of `wave_t @ matrix` exceeds `threshold`, and the
    potentials at that step. `fields` holds the rows' spike times [R, K]."""
    count = fields.shape[0]
    device, dtype = fields.device, matrix.dtype
    patches = fields.to(dtype)
    wave = torch.empty_like(patches)
    potentials = matrix.new_empty(count, matrix.shape[1])
    best = final
    low = torch.zeros(count, dtype=torch.long, device=device)
    high = torch.full((count,), time_steps - 1, dtype=torch.long, device=device)
    for _ in range(math.ceil(math.log2(time_steps))):
        active = low < high
        middle = (low + high) // 2
        # the cumulative wave at each row's own step: 1 where patch time <= middle (integers)
        torch.sub((middle + 1).to(dtype).unsqueeze(1), patches, out=wave).clamp_(0, 1)
        torch.mm(wave, matrix, out=potentials)
        crossed = (potentials.amax(dim=1) > threshold) & active
        high = torch.where(crossed, middle, high)
        low = torch.where(active & ~crossed, middle + 1, low)
        best = torch.where(crossed.unsqueeze(1), potentials, best)
    return high, best


def survivor_winners(survivors: Survivors, kwta: int = 1, inhibition_radius: int = 0) -> torch.Tensor:
    """`get_k_winners` of pointwise-inhibited potentials, working on one survivor per position.

    Same float32 scores and tie rule (first flat index `feature * H * W + row * W + col` among
    equal scores) as `functional.get_k_winners`, at the cost of [B, H, W] instead of
    [B, F, H, W] per pick.

    Shape: Survivors over [B, H, W] -> LongTensor [B, kwta, 3].
    """
    kwta = check_int(kwta, "kwta", 1)
    radius = check_int(inhibition_radius, "inhibition_radius", 0)
    steps = survivors.time_steps
    batch, height, width = survivors.times.shape
    device = survivors.times.device
    times = survivors.times.flatten(1)
    scores = _scores(times, survivors.values.flatten(1), steps)               # [B, H*W]
    features = survivors.features.flatten(1)
    position = torch.arange(height * width, device=device)
    flat_index = features * (height * width) + position
    rows, cols = position // width, position % width
    winners = torch.full((batch, kwta, 3), -1, dtype=torch.long, device=device)
    alive = torch.ones(batch, 1, dtype=torch.bool, device=device)
    never = torch.iinfo(torch.long).max
    for k in range(kwta):
        best = scores.max(dim=1, keepdim=True).values
        alive &= best != 0
        pick = torch.where(scores == best, flat_index, never).argmin(dim=1, keepdim=True)
        feature, row, col = features.gather(1, pick), pick // width, pick % width
        winners[:, k] = torch.where(alive, torch.cat((feature, row, col), dim=1), -1)
        inhibit = features == feature
        if radius > 0:
            inhibit |= ((rows - row).abs() <= radius) & ((cols - col).abs() <= radius)
        scores = scores.masked_fill(inhibit & alive, 0)
    return winners


def _scores(times: torch.Tensor, values: torch.Tensor, time_steps: int) -> torch.Tensor:
    """SpykeTorch's float32 k-WTA score from spike times and first-spike values, bit for bit:
    `v = T * max(value)` per sample, `score = sum over spiking steps of (value + v)` with the
    time sum done by the same reduction as the wave path (`.sum` over the time dimension).
    Values of spiking neurons must be positive (above a non-negative threshold).

    Shape: [B, N] (any trailing shape) -> float [B, N...]."""
    spiking = times < time_steps
    truncated = torch.where(spiking, values, 0.0)
    v = truncated.flatten(1).max(dim=1).values.mul_(time_steps)
    v = v.view((-1,) + (1,) * (values.dim() - 1))
    steps = torch.arange(time_steps, device=times.device).view((1, -1) + (1,) * (values.dim() - 1))
    terms = torch.where(steps >= times.unsqueeze(1), (truncated + v).unsqueeze(1), 0.0)
    return terms.sum(dim=1)


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
