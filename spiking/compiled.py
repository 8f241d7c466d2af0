"""Compiled per-sample loops (numba) for exact conv STDP on the CPU.

SpykeTorch's conv STDP is a loop over samples: forward one sample, pick its winners, update
their kernels, next sample. Written as tensor operations, one sample costs about 160 small
calls (1.2 ms on 2 cores for mozafari2018's conv1) and cannot be batched without changing the
algorithm. `stdp_sequential_` runs the whole loop for a batch in one compiled call instead
(about 0.4 ms a sample for conv1, 0.3 ms for conv2, on one core), and every batch size gives
the same bits, because it *is* the loop.

Per sample, what it computes (the definitions of `functional`, for a one-sample batch):

- potentials `P[f, pos](t) = sum of W[f, c, i, j] over the inputs of pos's receptive field with
  spike time <= t`, accumulated step by step in float64 and rounded to float32 when compared:
  the float32 rounding of the exact sum (float64 holds it exactly while the weights span less
  than 2**44), whatever the order. The batched engine rounds in its GEMM's order instead, so
  the two can disagree on a potential within a few float32 ulps of the threshold (README:
  "Exact mode");
- a position's spike step: the first `t` with some `float32(P[f, pos](t)) > threshold`; its
  survivor (pointwise inhibition): the largest of those potentials, the lowest feature on ties;
- k-WTA on SpykeTorch's float32 score: `v = float32(T * max survivor value)`, `score = the
  float32 sum, step after step, of (T - step) copies of float32(value + v)`; the best score
  wins, the lowest flat index `f * H'W' + pos` among equal ones; a winner inhibits its feature
  everywhere and the positions within `inhibition_radius` rows and columns;
- each winner (f, pos, step): `W[f] += rate * (W[f] - lower) * (upper - W[f])` with the
  stabiliser (`W[f] += rate` without), in float32 in that operation order, `rate = a_plus[f]`
  where the input spiked at `step` or earlier, `a_minus[f]` elsewhere; then clamped to the
  bounds. Weights outside the bounds are clamped as a whole after the first sample, winners
  or not (`STDP.update`'s clamp).

Used by `models.layers.HiddenLayer` in exact mode when `usable` says so (CPU float32 tensors and
numba importable); otherwise the tensor path (`engine.sample_winners` / `STDP.update_sequential`)
computes the same loop. Set `ENABLED = False` to force the tensor path.
"""
from __future__ import annotations

import numpy as np
import torch

try:
    import numba
except ImportError:         # the tensor path computes the same loop, only slower
    numba = None

ENABLED = numba is not None


def usable(times: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `stdp_sequential_` can run on these tensors: numba present (and `ENABLED`), CPU,
    uint8 spike times, contiguous float32 weights."""
    return (ENABLED and times.device.type == "cpu" and weight.device.type == "cpu"
            and times.dtype == torch.uint8 and weight.dtype == torch.float32 and weight.is_contiguous())


@torch.no_grad()
def stdp_sequential_(times: torch.Tensor, weight: torch.Tensor, threshold: float, time_steps: int,
                     kwta: int, inhibition_radius: int, a_plus: torch.Tensor, a_minus: torch.Tensor,
                     use_stabilizer: bool, lower: float, upper: float, bounded: bool) -> torch.Tensor:
    """Exact conv STDP of a batch, sample after sample, updating `weight` in place (see the
    module docstring for the definitions). `bounded`: whether the weights already lie within
    [lower, upper] (else the first sample clamps them all).

    Shape: times uint8 [B, C, H, W] (padded input spike times, `time_steps` = never), weight
    float32 [F, C, kh, kw], a_plus / a_minus float32 [F] -> winners LongTensor [B, kwta, 3] of
    (feature, row, col) in pick order, -1 rows where fewer won.
    """
    batch = times.shape[0]
    winners = np.full((batch, kwta, 3), -1, dtype=np.int64)
    _learn(np.ascontiguousarray(times.numpy()), weight.detach().numpy(), float(np.float32(threshold)),
           int(time_steps), int(kwta), int(inhibition_radius),
           a_plus.detach().to(torch.float32).numpy(), a_minus.detach().to(torch.float32).numpy(),
           bool(use_stabilizer), float(lower), float(upper), bool(bounded), winners)
    # numpy's writes bypass torch: tell version-keyed caches (`spiking.remember`) the weight changed
    torch.autograd.graph.increment_version(weight)
    return torch.from_numpy(winners)


def _jit(function):
    return numba.njit(cache=True, nogil=True)(function) if numba is not None else function


@_jit
def _learn(times, weight, threshold, steps, kwta, radius, a_plus, a_minus, stabilize, lower, upper,
           bounded, winners):
    batch, channels, height, width = times.shape
    features, _, kh, kw = weight.shape
    out_h, out_w = height - kh + 1, width - kw + 1
    cells = out_h * out_w
    padded_features = (features + 3) // 4 * 4            # whole SIMD lanes in the inner loops
    # the weights as [C, kh, kw, F] rows in float64: one input spike adds one row to a position
    rows = np.zeros((channels, kh, kw, padded_features), np.float64)
    for f in range(features):
        for c in range(channels):
            for i in range(kh):
                for j in range(kw):
                    rows[c, i, j, f] = weight[f, c, i, j]
    potential = np.empty((cells, padded_features), np.float64)
    spike_step = np.empty(cells, np.int64)                # steps = silent
    survivor = np.empty(cells, np.int64)
    value = np.empty(cells, np.float32)
    score = np.empty(cells, np.float32)
    touched_at = np.empty(cells, np.int64)
    touched = np.empty(cells, np.int64)
    by_step = np.empty(channels * height * width, np.int64)
    first = np.empty(steps + 1, np.int64)
    fill = np.empty(steps, np.int64)
    taken = np.empty(features, np.bool_)
    inhibited = np.empty(cells, np.bool_)
    fired = np.empty(cells, np.int64)
    limit = np.float32(threshold)
    limit64 = np.float64(limit)
    low, high = np.float32(lower), np.float32(upper)
    for b in range(batch):
        # ---- the input spikes in step order (a counting sort)
        first[:] = 0
        for c in range(channels):
            for y in range(height):
                for x in range(width):
                    t = np.int64(times[b, c, y, x])
                    if t < steps:
                        first[t + 1] += 1
        for t in range(steps):
            first[t + 1] += first[t]
            fill[t] = first[t]
        for c in range(channels):
            for y in range(height):
                for x in range(width):
                    t = np.int64(times[b, c, y, x])
                    if t < steps:
                        by_step[fill[t]] = (c * height + y) * width + x
                        fill[t] += 1
        # ---- potentials step by step; a position stops at its first spike
        potential[:, :] = 0.0
        spike_step[:] = steps
        touched_at[:] = -1
        for t in range(steps):
            count = 0
            for k in range(first[t], first[t + 1]):
                s = by_step[k]
                c, y, x = s // (height * width), (s // width) % height, s % width
                # the kernel offsets (i, j) whose position (y - i, x - j) lies in the output map
                for i in range(max(0, y - out_h + 1), min(kh, y + 1)):
                    for j in range(max(0, x - out_w + 1), min(kw, x + 1)):
                        pos = (y - i) * out_w + x - j
                        if spike_step[pos] < steps:
                            continue
                        target, row = potential[pos], rows[c, i, j]
                        for f in range(padded_features):
                            target[f] += row[f]
                        if touched_at[pos] != t:
                            touched_at[pos] = t
                            touched[count] = pos
                            count += 1
            for n in range(count):
                pos = touched[n]
                target = potential[pos]
                top = target[0]
                for f in range(1, padded_features):
                    if target[f] > top:
                        top = target[f]
                if top <= limit64:          # then no float32 rounding exceeds the threshold
                    continue
                best, best_value = -1, np.float32(0.0)
                for f in range(features):
                    p = np.float32(target[f])
                    if p > limit and (best < 0 or p > best_value):
                        best, best_value = f, p
                if best >= 0:
                    spike_step[pos], survivor[pos], value[pos] = t, best, best_value
        # ---- SpykeTorch's float32 k-WTA score, on the positions that spike
        spiking = 0
        largest = np.float32(0.0)
        for pos in range(cells):
            if spike_step[pos] < steps:
                fired[spiking] = pos
                spiking += 1
                largest = max(largest, value[pos])
        v = np.float32(largest * np.float32(steps))
        for n in range(spiking):
            pos = fired[n]
            term, total = np.float32(value[pos] + v), np.float32(0.0)
            for _ in range(steps - spike_step[pos]):
                total = np.float32(total + term)
            score[pos] = total
        # ---- k-WTA: a winner inhibits its feature and the positions within `radius`
        taken[:] = False
        inhibited[:] = False
        won = 0
        for _ in range(kwta):
            best, best_score, best_flat = -1, np.float32(0.0), 0
            for n in range(spiking):
                pos = fired[n]
                if inhibited[pos] or taken[survivor[pos]]:
                    continue
                flat = survivor[pos] * cells + pos
                if best < 0 or score[pos] > best_score or (score[pos] == best_score and flat < best_flat):
                    best, best_score, best_flat = pos, score[pos], flat
            if best < 0:
                break
            r, col = best // out_w, best % out_w
            taken[survivor[best]] = True
            for y in range(max(0, r - radius), min(out_h, r + radius + 1)):
                for x in range(max(0, col - radius), min(out_w, col + radius + 1)):
                    inhibited[y * out_w + x] = True
            winners[b, won, 0], winners[b, won, 1], winners[b, won, 2] = survivor[best], r, col
            won += 1
        # ---- STDP of the winners' kernels (distinct features)
        for n in range(won):
            f, r, col = winners[b, n, 0], winners[b, n, 1], winners[b, n, 2]
            post = spike_step[r * out_w + col]
            for c in range(channels):
                for i in range(kh):
                    for j in range(kw):
                        rate = a_plus[f] if np.int64(times[b, c, r + i, col + j]) <= post else a_minus[f]
                        w = weight[f, c, i, j]
                        if stabilize:
                            new = np.float32(w + np.float32(rate * np.float32(np.float32(w - low) * np.float32(high - w))))
                        else:
                            new = np.float32(w + rate)
                        new = min(max(new, low), high)
                        weight[f, c, i, j] = new
                        rows[c, i, j, f] = new
        if not bounded:
            for f in range(features):
                for c in range(channels):
                    for i in range(kh):
                        for j in range(kw):
                            w = min(max(weight[f, c, i, j], low), high)
                            weight[f, c, i, j] = w
                            rows[c, i, j, f] = w
            bounded = True
