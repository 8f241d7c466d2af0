"""Slow, obvious single-sample references written from the spec (loops are the point here).

Each takes one sample (no batch dimension: waves are [T, C, H, W]) and returns numpy arrays, so
that the vectorised, batched implementations can be checked element by element.
"""
from __future__ import annotations

import numpy as np
import torch

f32 = np.float32


def as_np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def pooling(wave, kernel, stride, padding=0):
    wave = as_np(wave)
    steps, channels, height, width = wave.shape
    out_h = (height + 2 * padding - kernel) // stride + 1
    out_w = (width + 2 * padding - kernel) // stride + 1
    out = np.zeros((steps, channels, out_h, out_w), dtype=wave.dtype)
    for t in range(steps):
        for c in range(channels):
            for i in range(out_h):
                for j in range(out_w):
                    best = -np.inf
                    for u in range(kernel):
                        for v in range(kernel):
                            r, q = i * stride + u - padding, j * stride + v - padding
                            if 0 <= r < height and 0 <= q < width:   # padding never wins
                                best = max(best, wave[t, c, r, q])
                    out[t, c, i, j] = best
    return out


def threshold(potentials, value):
    pot = as_np(potentials).copy()
    if value is None:
        pot[:-1] = 0
        return pot
    out = np.zeros_like(pot)
    for index in np.ndindex(pot.shape):
        if pot[index] > value:
            out[index] = pot[index]
    return out


def first_spike(column):
    """Index of the first non-zero step of a 1-D time series, or None."""
    for t, value in enumerate(column):
        if value != 0:
            return t
    return None


def pointwise_inhibition(thresholded):
    pot = as_np(thresholded)
    steps, channels, height, width = pot.shape
    out = np.zeros_like(pot)
    for i in range(height):
        for j in range(width):
            earliest = None
            for t in range(steps):
                if any(pot[t, c, i, j] > 0 for c in range(channels)):
                    earliest = t
                    break
            if earliest is None:
                continue
            best_c, best_v = None, None
            for c in range(channels):      # strictly larger wins, so the lowest index keeps ties
                if pot[earliest, c, i, j] > 0 and (best_v is None or pot[earliest, c, i, j] > best_v):
                    best_c, best_v = c, pot[earliest, c, i, j]
            out[:, best_c, i, j] = pot[:, best_c, i, j]
    return out


def k_winner_scores(potentials, spikes):
    """SpykeTorch's float32 score, with scalar float32 arithmetic and a sequential time sum."""
    pot, spk = as_np(potentials).astype(f32), as_np(spikes).astype(f32)
    steps, channels, height, width = pot.shape
    values = np.zeros((channels, height, width), dtype=f32)
    for index in np.ndindex(channels, height, width):
        count = sum(spk[(t,) + index] for t in range(steps))
        first = min(max(int(steps - count), 0), steps - 1)
        values[index] = pot[(first,) + index]
    truncated_max = max(f32(spk[(t,) + index] * values[index])
                        for t in range(steps) for index in np.ndindex(channels, height, width))
    v = f32(truncated_max * f32(steps))
    scores = np.zeros((channels, height, width), dtype=f32)
    for index in np.ndindex(channels, height, width):
        acc = f32(0)
        for t in range(steps):
            s = spk[(t,) + index]
            acc = f32(acc + f32(f32(s * values[index]) + f32(s * v)))
        scores[index] = acc
    return scores


def select_winners(scores, kwta, radius):
    total = as_np(scores).copy()
    channels, height, width = total.shape
    winners = []
    for _ in range(kwta):
        flat_index = int(np.argmax(total))      # numpy's argmax: first index among equals
        if total.flat[flat_index] == 0:
            break
        f, i, j = np.unravel_index(flat_index, total.shape)
        winners.append((int(f), int(i), int(j)))
        total[f] = 0
        if radius > 0:
            total[:, max(0, i - radius):min(height, i + radius + 1),
                  max(0, j - radius):min(width, j + radius + 1)] = 0
    return winners


def get_k_winners(potentials, kwta=1, radius=0, spikes=None):
    if spikes is None:
        spikes = np.sign(as_np(potentials))
    return select_winners(k_winner_scores(potentials, spikes), kwta, radius)


def local_normalization(image, radius, eps=1e-12):
    img = as_np(image).astype(np.float64)
    channels, height, width = img.shape
    out = np.zeros_like(img)
    size = (2 * radius + 1) ** 2
    for c in range(channels):
        for i in range(height):
            for j in range(width):
                box = img[c, max(0, i - radius):i + radius + 1, max(0, j - radius):j + radius + 1]
                out[c, i, j] = img[c, i, j] / (box.sum() / size + eps)
    return out


def intensity_lateral_inhibition(image, percents):
    img = as_np(image)
    channels, height, width = img.shape
    n = len(percents)
    out = np.zeros_like(img)
    for c in range(channels):
        for i in range(height):
            for j in range(width):
                factor = 0.0
                for di in range(-n, n + 1):
                    for dj in range(-n, n + 1):
                        d = max(abs(di), abs(dj))
                        if d == 0:
                            continue
                        r, q = i + di, j + dj
                        neighbour = img[c, r, q] if 0 <= r < height and 0 <= q < width else 0.0
                        if neighbour < img[c, i, j]:
                            factor += percents[d - 1]
                out[c, i, j] = img[c, i, j] * (1 + factor)
    return out


def latency_times(intensities, steps):
    """Spike times of rank-order coding with a stable descending sort (no ties assumed)."""
    values = as_np(intensities).reshape(-1)
    nonzero = int((values != 0).sum())
    order = sorted(range(values.size), key=lambda k: -values[k])
    times = np.full(values.size, steps, dtype=np.int64)
    bin_size = nonzero // steps
    for rank, k in enumerate(order):
        if bin_size > 0 and rank < bin_size * steps:
            times[k] = rank // bin_size
        elif bin_size == 0 and rank < nonzero:
            times[k] = rank
    return times.reshape(as_np(intensities).shape)


def stdp_update(weight, input_spikes, output_spikes, winners, a_plus, a_minus, stabilizer,
                lower, upper):
    """One sample's STDP update of the whole weight tensor, loop by loop."""
    w = as_np(weight).astype(f32).copy()
    inp, out = as_np(input_spikes), as_np(output_spikes)
    features, channels, kh, kw = w.shape
    rates = np.zeros_like(w)
    for f, i, j in winners:
        post = out[:, f, i, j].sum()
        for c in range(channels):
            for u in range(kh):
                for v in range(kw):
                    pre = inp[:, c, i + u, j + v].sum()
                    rates[f, c, u, v] = a_plus[f] if pre >= post else a_minus[f]
    for index in np.ndindex(w.shape):
        if stabilizer:
            w[index] = f32(w[index] + f32(rates[index] * f32(f32(w[index] - f32(lower)) *
                                                                f32(f32(upper) - w[index]))))
        else:
            w[index] = f32(w[index] + rates[index])
    return np.clip(w, f32(lower), f32(upper)), rates
