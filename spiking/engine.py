"""The training engine's fast paths: spike times found by search in time, not T convolutions.

With non-negative weights, whether a neuron (or any feature at a position) has crossed its
threshold by step `t` is monotone in `t`. So:

1. one convolution of the final map gives every position's last-step potentials; positions
   where no feature exceeds the threshold never spike (trained layers leave most silent);
2. for the others only, the receptive fields are gathered as rows of spike times, and the
   potentials at any per-row step `t` are one GEMM: `(fields <= t) @ W`;
3. `earliest_spikes` binary-searches each position's earliest crossing step (ceil(log2 T)
   GEMMs), which is all pointwise inhibition, k-WTA and STDP need; `spike_times` counts the
   steps above threshold of every feature (T GEMMs, on spiking positions only).

Results equal the direct per-step path (`times.conv_fire_times` and the wave primitives) up to
float32 summation order, bit for bit when the sums are exact (tests use dyadic weights).

Every product runs on `forward_weight`: subnormal weights as zeros, which changes no spike at
a threshold >= 0.01 and keeps CPU GEMMs off their slow subnormal path.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._checks import check_int, check_rank, check_threshold
from .remember import patch_remembered, remembered
from .sequential import MIN_SHORTCUT_THRESHOLD
from .times import TIMES, _scores, final_map

FIELD_BLOCK_BYTES = 1 << 22     # float receptive fields per GEMM block: stays in cache
SMALL_BATCH = 2                 # up to this many images, last-step potentials by one GEMM


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


@dataclass
class _Rows:
    """Positions whose last-step potentials cross the threshold, ready for GEMMs."""
    positions: torch.Tensor    # flat (b, row, col) index [R]
    fields: torch.Tensor       # receptive-field spike times, float [R, K]
    final: torch.Tensor        # last-step potentials [R, F]
    matrix: torch.Tensor       # weights as [K, F16] (zero columns beyond F)


def forward_weight(weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """The weights a forward pass multiplies: for `threshold >= MIN_SHORTCUT_THRESHOLD`,
    `weight` with its subnormal entries (|w| < 2**-126 in float32) as zeros; else `weight`.

    Why: the stabiliser's multiplicative decay `w += a_minus * w * (1 - w)` leaves most weights
    of a trained layer subnormal (83 % of deep2024's conv1 and 93 % of its conv2 after exact
    STDP), and x86 CPUs multiply subnormal operands through a microcode assist: a convolution
    or GEMM with such weights ran about 10x slower (28x for `spike_times` on conv1).

    Why it changes no spike: a potential that exceeds a threshold >= 0.01 over K <= 2**16
    inputs has an addend >= 2**-23, whose float32 ulp (>= 2**-46) absorbs the sum of all its
    subnormal addends (< 2**-110); a potential without such an addend stays below 0.01 either
    way. So the same neurons cross at the same steps, up to float32 summation order as the
    engine is anyway. The stored weights, hence the learning rules, are untouched.
    """
    if threshold < MIN_SHORTCUT_THRESHOLD or weight.dtype not in _EXPONENT_BITS:
        return weight
    # remembered until the weight changes (`spiking.remember`): a frozen layer is flushed once
    return remembered(weight, "_forward_weight", None, lambda: _flush_subnormals(weight))


def _flush_subnormals(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` with its subnormal entries as zeros, by integer ops (no subnormal arithmetic)."""
    integer, bits = _EXPONENT_BITS[tensor.dtype]
    raw = tensor.view(integer)
    return (raw * (raw & bits).ne(0)).view(tensor.dtype)


# float dtype -> (same-width integer dtype, its exponent bits): a zero exponent is zero or subnormal
_EXPONENT_BITS = {torch.float32: (torch.int32, 0x7F800000), torch.float64: (torch.int64, 0x7FF0000000000000)}


def _spiking_rows(times, weight, threshold, time_steps) -> tuple[_Rows, tuple]:
    features, channels, kh, kw = weight.shape
    batch, _, height, width = times.shape
    rows, cols = height - kh + 1, width - kw + 1
    matrix = forward_matrix(weight, threshold)
    # channels-last receptive fields, in `forward_matrix`'s (kh, kw, C) order
    values = torch.empty((batch, height, width, channels), dtype=weight.dtype, device=times.device)
    values.copy_(times.permute(0, 2, 3, 1))
    view = values.as_strided((batch, rows, cols, kh, kw * channels),
                             (height * width * channels, width * channels, channels, width * channels, 1))
    if batch <= SMALL_BATCH:
        # a few images: one GEMM over every receptive field beats a convolution call, and the
        # rows it already holds are the spiking rows' fields
        every = view.reshape(batch * rows * cols, channels * kh * kw)
        potentials = (torch.lt(every, time_steps, out=torch.empty_like(every)) @ matrix)[:, :features]
        positions = torch.nonzero(potentials.amax(dim=1) > threshold).flatten()
        return (_Rows(positions, every[positions], potentials[positions], matrix), (batch, rows, cols))
    # plain F.conv2d: the engine is exact up to float32 summation order anyway
    final = F.conv2d(final_map(times, time_steps, weight.dtype), forward_weight(weight, threshold))
    b, r, c = torch.nonzero(final.amax(dim=1) > threshold, as_tuple=True)
    fields = view[b, r, c]                      # the receptive fields of those positions
    last = final.permute(0, 2, 3, 1)[b, r, c]                                  # [R, F]
    positions = (b * rows + r) * cols + c
    return (_Rows(positions, fields.reshape(b.numel(), channels * kh * kw), last, matrix),
            (batch, rows, cols))


def _blocks(count: int, size: int):
    block = max(256, FIELD_BLOCK_BYTES // (4 * size))
    return [slice(start, start + block) for start in range(0, count, block)]


def earliest_spikes(times: torch.Tensor, weight: torch.Tensor, threshold: float,
                    time_steps: int) -> Survivors:
    """Conv + fire + pointwise inhibition in one pass, by bisection in time per position.

    For every position that spikes at all, a binary search over [0, T - 1] finds the earliest
    step at which any feature exceeds the threshold. At that step the features above threshold
    are exactly those first spiking then, and the largest (lowest index on exact ties) survives,
    as in `functional.pointwise_inhibition`. Equals
    `pointwise_inhibition_times(*conv_fire_times(...))` up to float32 summation order.

    Shape: times uint8 [B, C, H, W], weight [F, C, kh, kw] -> Survivors over [B, H', W'].
    """
    check_rank(times, 4, "times", TIMES)
    check_threshold(threshold)
    steps = check_int(time_steps, "time_steps", 1)
    features = weight.shape[0]
    rows, shape = _spiking_rows(times, weight, threshold, steps)
    count = rows.positions.numel()
    high = torch.full((count,), steps - 1, dtype=torch.long, device=times.device)
    best = rows.final
    for part in _blocks(count, rows.fields.shape[1]):
        high[part], best[part] = _bisect(rows.fields[part], best[part], rows.matrix, threshold, steps)
    winner = torch.where(best > threshold, best, float("-inf")).argmax(dim=1)
    total = shape[0] * shape[1] * shape[2]
    out_times = torch.full((total,), steps, dtype=torch.long, device=times.device)
    out_features = torch.full((total,), -1, dtype=torch.long, device=times.device)
    out_values = weight.new_zeros(total)
    out_times[rows.positions] = high
    out_features[rows.positions] = winner
    out_values[rows.positions] = best.gather(1, winner.unsqueeze(1)).squeeze(1)
    return Survivors(out_times.view(shape), out_features.view(shape), out_values.view(shape),
                     features, steps)


def _bisect(fields, final, matrix, threshold, time_steps):
    """For rows known to cross by the last step (`final` = their last-step potentials), the
    earliest step at which any column of `wave_t @ matrix` exceeds `threshold`, and the
    potentials at that step. `fields` holds the rows' spike times as floats [R, K].

    A binary search by powers of two: `step` counts the steps known to stay below the
    threshold, and each round probes `step + bit - 1` (crossing is monotone in the step). The
    last probe that crossed is the answer, so its potentials are kept. Where no probe crossed
    (`final` came from another product, rounded differently, a hair above the threshold) the
    answer is the last step with `final`'s potentials."""
    count, features = final.shape
    wave = torch.empty_like(fields)
    padded = matrix.new_empty(count, matrix.shape[1])
    potentials = padded[:, :features]
    best = final
    step = torch.zeros(count, dtype=torch.long, device=fields.device)
    bit = 1 << (time_steps - 1).bit_length() - 1 if time_steps > 1 else 0
    while bit:
        probe = torch.add(step, bit - 1).clamp_(max=time_steps - 1)
        # the cumulative wave at each row's own step: 1 where the field's time <= probe, compared
        # straight into floats (`(a <= b).to(float)` converts bools ~5x slower)
        torch.le(fields, probe.to(fields.dtype).unsqueeze(1), out=wave)
        torch.mm(wave, matrix, out=padded)
        below = potentials.amax(dim=1) <= threshold
        step.add_(below, alpha=bit)
        best = torch.where(below.unsqueeze(1), best, potentials)
        bit >>= 1
    return step.clamp_(max=time_steps - 1), best


def forward_matrix(weight: torch.Tensor, threshold: float) -> torch.Tensor:
    """`forward_weight(weight)` as the engine's GEMMs multiply it: [kh * kw * C, F16], rows in
    a channels-last receptive field's (kh, kw, C) order (copied in runs of kw * C contiguous
    values: ~4x faster than the weight's (C, kh, kw) order), columns beyond F zero (GEMMs run
    markedly faster with an output width that is a multiple of 16, and zero columns never
    exceed a non-negative threshold).

    Remembered on the weight until it changes (`spiking.remember`); `patch_forward_matrix`
    keeps it current through one-sample updates, which change only their winners' columns."""
    def build():
        flushed = forward_weight(weight, threshold)
        features = weight.shape[0]
        matrix = weight.new_zeros(weight[0].numel(), -(-features // 16) * 16)
        matrix[:, :features] = flushed.permute(0, 2, 3, 1).reshape(features, -1).t()
        return matrix
    return remembered(weight, "_forward_matrix", threshold, build)


def patch_forward_matrix(weight: torch.Tensor, threshold: float, features: torch.Tensor, since: int) -> None:
    """After an in-place change of only the rows `features` of `weight`, made since its version
    counter read `since`, update those columns of its remembered `forward_matrix` (or forget a
    matrix remembered from another version or threshold)."""
    def rewrite(matrix, _):
        if features.numel():
            rows = weight[features]
            if threshold >= MIN_SHORTCUT_THRESHOLD and rows.dtype in _EXPONENT_BITS:
                rows = _flush_subnormals(rows)
            matrix[:, features] = rows.permute(0, 2, 3, 1).reshape(features.numel(), -1).t()
    patch_remembered(weight, "_forward_matrix", since, rewrite, threshold)


def sample_winners(times: torch.Tensor, weight: torch.Tensor, threshold: float, time_steps: int,
                   kwta: int = 1, inhibition_radius: int = 0):
    """One sample's pointwise inhibition and k-WTA, with few tensor operations.

    The same winners as `survivor_winners(earliest_spikes(...))` on this one sample (same
    float32 scores and tie rule), for the exact mode's one-sample steps, where a batched call's
    ~300 small operations cost more than its arithmetic (this path: ~160 with the update):

    - `_spiking_rows` (its path for a few images) gathers the receptive fields channels-last
      and selects the positions that spike at all by one GEMM against `forward_matrix` (the
      batched pass selects with a convolution when it holds more than 2 images);
    - `_bisect` finds their earliest step, as in the batched pass: both sum each potential
      in the same order;
    - the k-WTA walks the candidates in score order on the host (a sort, then a loop that
      skips inhibited features and neighbourhoods and stops at `kwta` picks).

    Shape: times [C, H, W] (one padded sample's spike times), weight [F, C, kh, kw] ->
    (features, positions, steps: lists of up to `kwta` ints in pick order, positions as
    `row * W' + col`; the winners' receptive fields' spike times [n, C * kh * kw] float, in
    the weight's order).
    """
    kwta = check_int(kwta, "kwta", 1)
    inhibition_radius = check_int(inhibition_radius, "inhibition_radius", 0)
    channels, kh, kw = weight.shape[1:]
    # one image: `_spiking_rows` selects the spiking positions by one GEMM of every field
    found, (_, _, cols) = _spiking_rows(times.unsqueeze(0), weight, threshold, time_steps)
    positions, fields = found.positions, found.fields                         # [R], [R, K]
    if positions.numel() == 0:
        return [], [], [], fields.new_empty(0, channels * kh * kw)
    steps, best = _bisect(fields, found.final, found.matrix, threshold, time_steps)
    feature = torch.where(best > threshold, best, float("-inf")).argmax(dim=1)
    value = best.gather(1, feature.unsqueeze(1)).squeeze(1)
    # the spiking positions' scores: `_scores` sums each one on its own, step after step, so
    # they equal the whole map's (the silent positions only add zeros to the maximum)
    total = (times.shape[1] - kh + 1) * cols
    score = _scores(steps.unsqueeze(0), value.unsqueeze(0), time_steps)[0]
    flat = feature * total + positions
    order = torch.argsort(flat)                     # equal scores: the first flat index wins
    order = order[torch.argsort(score[order], descending=True, stable=True)]
    feature, positions, steps = feature.tolist(), positions.tolist(), steps.tolist()
    picked_features, picked_positions, picked_steps = [], [], []
    picked = []
    for i in order.tolist():
        f, p = feature[i], positions[i]
        if f in picked_features:
            continue
        row, col = divmod(p, cols)
        if any(abs(row - q // cols) <= inhibition_radius and abs(col - q % cols) <= inhibition_radius
               for q in picked_positions):
            continue
        picked_features.append(f)
        picked_positions.append(p)
        picked_steps.append(steps[i])
        picked.append(i)
        if len(picked_features) == kwta:
            break
    # the winners' fields, from the channels-last (kh, kw, C) order to the weight's (C, kh, kw)
    won = fields[picked].view(-1, kh, kw, channels).permute(0, 3, 1, 2).reshape(len(picked), -1)
    return picked_features, picked_positions, picked_steps, won


def spike_times(times: torch.Tensor, weight: torch.Tensor, threshold: float, time_steps: int) -> torch.Tensor:
    """Spike times of every neuron of conv + fire (the first output of `conv_fire_times`).

    At every spiking position the steps above threshold are counted with one GEMM per step
    (`T - count` is the spike time, as in SpykeTorch); other positions never spike.

    Shape: times uint8 [B, C, H, W], weight [F, C, kh, kw] -> uint8 [B, F, H', W'].
    """
    check_rank(times, 4, "times", TIMES)
    check_threshold(threshold)
    steps = check_int(time_steps, "time_steps", 1)
    features = weight.shape[0]
    rows, (batch, height, width) = _spiking_rows(times, weight, threshold, steps)
    above = torch.zeros(rows.positions.numel(), features, dtype=torch.uint8, device=times.device)
    above += rows.final > threshold                                  # the last step, already known
    for part in _blocks(rows.positions.numel(), rows.fields.shape[1]):
        fields = rows.fields[part]
        wave = torch.empty_like(fields)
        potentials = rows.matrix.new_empty(fields.shape[0], rows.matrix.shape[1])
        for step in range(steps - 1):
            torch.le(fields, float(step), out=wave)
            torch.mm(wave, rows.matrix, out=potentials)
            above[part] += potentials[:, :features] > threshold
    out = torch.full((batch * height * width, features), steps, dtype=torch.uint8, device=times.device)
    out[rows.positions] = steps - above
    return out.view(batch, height, width, features).permute(0, 3, 1, 2).contiguous()


def survivor_winners(survivors: Survivors, kwta: int = 1, inhibition_radius: int = 0) -> torch.Tensor:
    """`get_k_winners` of pointwise-inhibited potentials, working on one survivor per position.

    Same float32 scores and tie rule (first flat index `feature * H * W + row * W + col` among
    equal scores) as `functional.get_k_winners`, at the cost of [B, H, W] instead of
    [B, F, H, W] per pick.

    Shape: Survivors over [B, H, W] -> LongTensor [B, kwta, 3].
    """
    kwta = check_int(kwta, "kwta", 1)
    radius = check_int(inhibition_radius, "inhibition_radius", 0)
    batch, height, width = survivors.times.shape
    device = survivors.times.device
    scores = _scores(survivors.times.flatten(1), survivors.values.flatten(1), survivors.time_steps)
    features = survivors.features.flatten(1)
    flat_index = features * (height * width) + torch.arange(height * width, device=device)
    near = _neighbourhoods(height, width, radius, str(device)) if radius > 0 else None
    picks, alive = [], torch.ones(batch, 1, dtype=torch.bool, device=device)
    never = torch.iinfo(torch.long).max
    for _ in range(kwta):
        best = scores.max(dim=1, keepdim=True).values
        alive = alive & (best != 0)
        pick = torch.where(scores == best, flat_index, never).argmin(dim=1, keepdim=True)
        feature = features.gather(1, pick)
        picks.append(torch.cat((feature, pick, alive), dim=1))
        inhibit = features == feature
        if near is not None:
            inhibit |= near[pick.squeeze(1)]
        scores = scores.masked_fill(inhibit & alive, 0)
    feature, position, valid = torch.stack(picks, dim=1).unbind(-1)            # [B, kwta] each
    winners = torch.stack((feature, position // width, position % width), dim=-1)
    return torch.where(valid.bool().unsqueeze(-1), winners, -1)


@functools.lru_cache(maxsize=32)
def _neighbourhoods(height: int, width: int, radius: int, device: str) -> torch.Tensor:
    """near[p, q]: position q lies within `radius` rows and columns of position p. [HW, HW]"""
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    return (((rows.unsqueeze(1) - rows).abs() <= radius) &
            ((cols.unsqueeze(1) - cols).abs() <= radius))
