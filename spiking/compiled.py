"""Compiled per-sample loops (numba) for exact learning on the CPU: conv STDP
(`stdp_sequential_`) and the R-STDP of a decision read at one position (`reinforce_whole_map_`).

SpykeTorch's conv STDP is a loop over samples: forward one sample, pick its winners, update
their kernels, next sample. Written as tensor operations, one sample costs about 160 small
calls (1.2 ms on 2 cores for mozafari2018's conv1) and cannot be batched without changing the
algorithm. `stdp_sequential_` runs the whole loop for a batch in one compiled call instead
(about 0.4 ms a sample for conv1, 0.3 ms for conv2, on one core), and every batch size gives
the same bits, because it *is* the loop.

Per sample, what it computes (the definitions of `functional`, for a one-sample batch):

- potentials `P[f, pos](t) = sum of W[f, c, i, j] over the inputs of pos's receptive field with
  spike time <= t`, accumulated step by step in float64 (in a fixed order: input spikes by
  step, then by channel, row and column) and rounded to float32 when compared. While a
  kernel's nonzero weights span a range R with K * R < 2**29 (weights in [2**-20, 1], say) the
  float64 sum is exact, so each potential is the float32 rounding of its exact sum; decayed,
  tiny weights can break that by a float64 ulp, in the same way at every batch size. The
  batched engine rounds in its GEMM's float32 order instead, so the two can disagree on a
  potential within a few float32 ulps of the threshold (README: "Exact batched training");
- a position's spike step: the first `t` with some `float32(P[f, pos](t)) > threshold`; its
  survivor (pointwise inhibition): the largest of those potentials, the lowest feature on ties;
- k-WTA on SpykeTorch's float32 score: `v = float32(T * max survivor value)`, `score = the
  float32 sum, step after step, of (T - step) copies of float32(value + v)` (as
  `times._scores` and `functional.get_k_winners` sum it); the best score
  wins, the lowest flat index `f * H'W' + pos` among equal ones; a winner inhibits its feature
  everywhere and the positions within `inhibition_radius` rows and columns;
- each winner (f, pos, step): `W[f] += rate * (W[f] - lower) * (upper - W[f])` with the
  stabiliser (`W[f] += rate` without), in float32 in that operation order, `rate = a_plus[f]`
  where the input spiked at `step` or earlier, `a_minus[f]` elsewhere; then clamped to the
  bounds. Weights outside the bounds are clamped as a whole after the first sample, winners
  or not (`STDP.update`'s clamp).

Used by `models.layers.HiddenLayer` in exact mode when `usable` says so (CPU float32 tensors and
numba importable); otherwise the tensor path (`engine.sample_winners` / `STDP.update_sequential`)
computes the same loop, up to the float32 rounding of potentials (it sums them in its GEMM's
order; the two agree bit for bit where every sum is exact, `tests/test_compiled.py`). Set
`ENABLED = False` to force the tensor path.
"""
from __future__ import annotations

import numpy as np
import torch

from . import functional as sf
from ._checks import pair
from .remember import mark_within_bounds, within_bounds

try:
    import numba
except ImportError:         # the tensor path computes the same loop, only slower
    numba = None

ENABLED = numba is not None


def usable(times: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `stdp_sequential_` can run on these tensors: numba present (and `ENABLED`), CPU,
    uint8 spike times, contiguous float32 weights."""
    return _compilable(weight, times) and times.dtype == torch.uint8


def _compilable(weight: torch.Tensor, *others: torch.Tensor) -> bool:
    """numba present (and `ENABLED`), every tensor on the CPU, contiguous float32 weights (the
    loops write them in place through numpy)."""
    return (ENABLED and all(t.device.type == "cpu" for t in (weight, *others))
            and weight.dtype == torch.float32 and weight.is_contiguous())


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
    if batch:
        # numpy's writes bypass torch: tell version-keyed caches (`spiking.remember`) the weight changed
        torch.autograd.graph.increment_version(weight)
    return torch.from_numpy(winners)


def _jit(function):
    """numba's compilation of `function`, cached on disk where numba finds a writable place
    (`__pycache__` beside this file, else the user's cache directory; `NUMBA_CACHE_DIR`
    overrides both), else compiled afresh in each process (about 2 s a loop): numba refuses
    `cache=True` with a RuntimeError at import where neither is writable (a read-only install
    run by a user without a home directory, as in some containers)."""
    if numba is None:
        return function
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:            # "cannot cache function ...: no locator available for file ..."
        return numba.njit(nogil=True)(function)


@_jit
def _rule_step(w, rate, stabilize, low, high):
    """One weight's update in float32, in SpykeTorch's operation order, clamped to [low, high]:
    `w + rate * (w - low)(high - w)` with the stabiliser, `w + rate` without."""
    if stabilize:
        new = np.float32(w + np.float32(rate * np.float32(np.float32(w - low) * np.float32(high - w))))
    else:
        new = np.float32(w + rate)
    return min(max(new, low), high)


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
                        new = _rule_step(weight[f, c, i, j], rate, stabilize, low, high)
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


def whole_map_usable(final: torch.Tensor, weight: torch.Tensor, padding) -> bool:
    """Whether `reinforce_whole_map_` can run: as `usable`, and the convolution is one that
    `functional.conv2d` computes as `whole_map_conv2d` (float32 maps, the kernel covering the
    whole zero-padded map: one output position)."""
    return _compilable(weight, final) and sf._whole_map_padding(final, weight, padding) is not None


@torch.no_grad()
def reinforce_whole_map_(rule, final: torch.Tensor, labels: torch.Tensor, feature_class: torch.Tensor,
                         time_steps: int, padding=0, allowed: torch.Tensor | None = None,
                         teacher: torch.Tensor | None = None):
    """`sequential.reinforce_sequential_` for a decision read at one position (its kernel covers
    the whole padded map), as one compiled loop over the batch.

    The batch's potentials come from one `functional.whole_map_conv2d` (a float64 product
    rounded once: on spike inputs with the decision's weights the float64 sum is exact, so each
    is the correctly rounded float32 of the true sum). Sample after sample, the loop recomputes
    the potentials of the features updated earlier in the batch the same way (a float64 sum of
    the weights of the inputs that spiked, rounded once: the same bits), decides (largest
    potential, `sequential.decision_picks`' score and tie rule), rewards or punishes its winner
    (and with `teacher` updates the label class's neuron with the largest potential after a
    punishment, `sequential.teacher_picks`) and updates those rows before the next sample:
    `W[f] += rate * (W[f] - lower)(upper - W[f])` with the stabiliser (`W[f] += rate`
    without), `rate = a_plus` where the input spiked, `a_minus` elsewhere, then clamped. Weights
    outside the bounds are clamped as a whole by the first update, before its teacher's.

    Shape: as `reinforce_sequential_`: final [B, C, H, W] (binary), labels [B], feature_class [F]
    -> (winners LongTensor [B, 1, 3], -1 when silent; the potentials each sample decided on
    [B, F, 1, 1]).
    """
    weight = rule.conv_layer.weight
    lower, upper = rule.reward.lower_bound, rule.reward.upper_bound
    features = weight.shape[0]
    rows, cols = pair(padding, "padding")
    batch = final.shape[0]
    # a new tensor (the product's rounding), which the loop overwrites with what each sample saw
    potentials = sf.whole_map_conv2d(final, weight, (rows, cols)).view(batch, features)
    since = weight._version                      # the remembered float64 matrix's version
    padded = torch.nn.functional.pad(final, (cols, cols, rows, rows)).flatten(1) > 0
    allowed = torch.ones(features, dtype=torch.bool) if allowed is None else allowed.to(torch.bool)
    rates = torch.stack((rule.reward.a_plus, rule.reward.a_minus, rule.punish.a_plus, rule.punish.a_minus,
                         *(teacher if teacher is not None else rule.reward.a_plus.new_zeros(2, features))))
    picked = np.full(batch, -1, dtype=np.int64)
    moved = np.zeros(features, dtype=np.bool_)
    bounded = within_bounds(weight, lower, upper)
    clamped = _reinforce(padded.numpy(), weight.detach().view(features, -1).numpy(),
                         potentials.numpy(), labels.to(torch.long).numpy(), feature_class.to(torch.long).numpy(),
                         int(time_steps), allowed.numpy(), rates.to(torch.float32).numpy(), teacher is not None,
                         bool(rule.reward.use_stabilizer), float(lower), float(upper), bounded, picked, moved)
    if batch:
        torch.autograd.graph.increment_version(weight)
    if bounded or clamped:
        mark_within_bounds(weight, lower, upper)
    if not clamped and moved.any():
        sf.patch_whole_map_matrix(weight, torch.from_numpy(np.flatnonzero(moved)), since)
    picked = torch.from_numpy(picked)
    zero = torch.zeros_like(picked)
    winners = torch.stack((picked, torch.where(picked >= 0, zero, -1), torch.where(picked >= 0, zero, -1)), 1)
    return winners.unsqueeze(1), potentials.view(batch, features, 1, 1)


@_jit
def _reinforce(inputs, weight, potentials, labels, feature_class, steps, allowed, rates, has_teacher,
               stabilize, lower, upper, bounded, picked, moved):
    batch, size = inputs.shape
    features = weight.shape[0]
    changed = np.zeros(features, np.bool_)       # rows that differ from the batch's start
    spiked = np.empty(size, np.int64)
    low, high = np.float32(lower), np.float32(upper)
    clamped = False
    for b in range(batch):
        count = 0
        for k in range(size):
            if inputs[b, k]:
                spiked[count] = k
                count += 1
        for f in range(features):
            if changed[f]:
                total = 0.0
                for n in range(count):
                    total += weight[f, spiked[n]]
                potentials[b, f] = np.float32(total)
        # ---- the decision: score p + T * max(p) over the spiking (positive, allowed) neurons
        largest, any_spike = np.float32(0.0), False
        for f in range(features):
            p = potentials[b, f]
            if p > 0 and allowed[f]:
                any_spike = True
                largest = max(largest, p)
        if not any_spike:
            continue                              # silent: no reward, no update
        v = np.float32(largest * np.float32(steps))
        winner, best = -1, np.float32(0.0)
        for f in range(features):
            p = potentials[b, f]
            if p > 0 and allowed[f]:
                score = np.float32(p + v)
                if winner < 0 or score > best:
                    winner, best = f, score
        picked[b] = winner
        hit = feature_class[winner] == labels[b]
        taught = -1
        if has_teacher and not hit:
            top = np.float32(0.0)
            for f in range(features):
                if feature_class[f] == labels[b] and allowed[f] and (taught < 0 or potentials[b, f] > top):
                    taught, top = f, potentials[b, f]
        # ---- the winner's update (then the first update's clamp), then the teacher's
        for turn in range(2):
            f = winner if turn == 0 else taught
            if f < 0:
                continue
            row = 0 if hit else 2
            if turn == 1:
                row = 4
            plus, minus = rates[row, f], rates[row + 1, f]
            for k in range(size):
                weight[f, k] = _rule_step(weight[f, k], plus if inputs[b, k] else minus, stabilize, low, high)
            changed[f] = True
            moved[f] = True
            if not bounded:
                for g in range(features):
                    for k in range(size):
                        weight[g, k] = min(max(weight[g, k], low), high)
                    changed[g] = True
                    moved[g] = True
                bounded = True
                clamped = True
    return clamped
