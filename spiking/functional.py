"""Spiking primitives on batched spike waves (SpykeTorch's names and argument names).

Layout: a spike wave or a potential tensor is `[B, T, C, H, W]` (batch, time, channel, row,
column). A spike wave is cumulative: once a neuron has spiked it shows 1 at every later step.
Every primitive treats the batch elements independently: a batched call gives, for each sample,
exactly what the same call on that sample alone gives, and with `B = 1` the results equal
SpykeTorch's single-sample semantics, tie rules included.

Functions return new tensors; the variants ending in `_` work in place, as in torch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_int, check_rank, check_same_shape, check_threshold, pair
from .remember import patch_remembered, remembered

WAVE = "[B, T, C, H, W]"


def pad(input: torch.Tensor, pad: tuple[int, int, int, int], value: float = 0) -> torch.Tensor:
    """Constant padding of the last two dimensions, `pad = (left, right, top, bottom)`.

    Shape: [..., H, W] -> [..., H + top + bottom, W + left + right].
    """
    if not isinstance(input, torch.Tensor) or input.dim() < 2:
        raise ValueError(f"pad expects a tensor with at least 2 dims [..., H, W], got "
                         f"{getattr(input, 'shape', type(input).__name__)}")
    if len(pad) != 4:
        raise ValueError(f"pad must be (left, right, top, bottom), got {pad!r}")
    return F.pad(input, tuple(int(p) for p in pad), value=value)


def pooling(input: torch.Tensor, kernel_size, stride=None, padding=0) -> torch.Tensor:
    """2-D max pooling of every time slice (floor mode; padded cells are -inf and never win).

    On a cumulative wave this passes on the earliest spike of each window.
    `stride` defaults to `kernel_size`.

    Shape: [B, T, C, H, W] -> [B, T, C, H', W'], H' = floor((H + 2 pad - k) / stride) + 1.
    """
    check_rank(input, 5, "input", WAVE)
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    padding = pair(padding, "padding")
    b, t = input.shape[:2]
    pooled = F.max_pool2d(input.flatten(0, 1), kernel, stride, padding)
    return pooled.unflatten(0, (b, t))


def threshold_(potentials: torch.Tensor, threshold=None) -> torch.Tensor:
    """In-place `threshold`."""
    check_rank(potentials, 5, "potentials", WAVE)
    threshold = check_threshold(threshold)
    if threshold is None:
        potentials[:, :-1].zero_()
    else:
        # keep strictly-greater values, zero the rest (torch.threshold_ has this exact rule)
        torch.threshold_(potentials, float(threshold), 0.0)
    return potentials


def threshold(potentials: torch.Tensor, threshold=None) -> torch.Tensor:
    """Keep potentials strictly above `threshold`, zero the rest.

    With `threshold=None` every step but the last is zeroed and the last is kept as it is.

    Shape: [B, T, C, H, W] -> same.
    """
    check_rank(potentials, 5, "potentials", WAVE)
    return threshold_(potentials.clone(), threshold)


def fire_(potentials: torch.Tensor, threshold=None) -> torch.Tensor:
    """In-place `fire`: `potentials` becomes the spike wave, which is returned."""
    threshold_(potentials, threshold)
    return potentials.sign_()


def fire(potentials: torch.Tensor, threshold=None, return_thresholded_potentials: bool = False):
    """Spikes where the potential is strictly above `threshold`: `sign(threshold(potentials))`.

    With a threshold a neuron spikes at every step where its potential exceeds it; since
    potentials of non-negative weights never decrease, the result is a cumulative wave. Without
    one only the last step can be non-zero (a negative last potential gives -1).

    Shape: potentials [B, T, C, H, W] -> spikes [B, T, C, H, W] (and the thresholded potentials
    of the same shape when `return_thresholded_potentials`).
    """
    check_rank(potentials, 5, "potentials", WAVE)
    thresholded = threshold_(potentials.clone(), threshold)  # `threshold` is the argument here
    spikes = thresholded.sign()
    if return_thresholded_potentials:
        return spikes, thresholded
    return spikes


def pointwise_inhibition(thresholded_potentials: torch.Tensor) -> torch.Tensor:
    """Keep, at each position, only the feature that spikes there first.

    Among features whose first spike falls on the same (earliest) step, the one with the largest
    potential at that step wins; exact ties go to the lowest feature index. The winner keeps its
    potentials at every step, every other feature at that position is zeroed at every step, and a
    position where nothing spikes by the last step stays zero.

    Shape: [B, T, C, H, W] -> same.
    """
    check_rank(thresholded_potentials, 5, "thresholded_potentials", WAVE)
    steps = thresholded_potentials.shape[1]
    maximum, feature = thresholded_potentials.max(dim=2)          # [B, T, H, W]
    active = maximum.sign()
    # earliest step at which anything spikes = T - number of active steps (cumulative waves)
    first = (steps - active.sum(dim=1, keepdim=True)).long().clamp_(0, steps - 1)
    winner = feature.gather(1, first)                             # [B, 1, H, W]
    coefficient = torch.zeros_like(thresholded_potentials[:, :1])  # [B, 1, C, H, W]
    coefficient.scatter_(2, winner.unsqueeze(2), active[:, -1:].unsqueeze(2))
    return thresholded_potentials * coefficient


def _check_features(potentials: torch.Tensor, inhibited_features) -> torch.Tensor:
    features = torch.as_tensor(inhibited_features, dtype=torch.long).flatten()
    channels = potentials.shape[2]
    if features.numel() and (features.min() < 0 or features.max() >= channels):
        raise ValueError(f"inhibited_features must lie in [0, {channels}), got "
                         f"{features.tolist()}")
    return features.to(potentials.device)


def feature_inhibition_(potentials: torch.Tensor, inhibited_features) -> torch.Tensor:
    """In-place `feature_inhibition`."""
    check_rank(potentials, 5, "potentials", WAVE)
    features = _check_features(potentials, inhibited_features)
    if features.numel():
        potentials.index_fill_(2, features, 0)
    return potentials


def feature_inhibition(potentials: torch.Tensor, inhibited_features) -> torch.Tensor:
    """Zero the given feature maps at every step (an empty list returns an unchanged copy).

    Shape: [B, T, C, H, W] -> same.
    """
    check_rank(potentials, 5, "potentials", WAVE)
    return feature_inhibition_(potentials.clone(), inhibited_features)


def select_winners(scores: torch.Tensor, kwta: int, inhibition_radius: int) -> torch.Tensor:
    """Greedy k-winners-take-all on per-neuron scores (the selection half of `get_k_winners`).

    Up to `kwta` times, per sample: take the neuron with the largest score over (feature, row,
    col), the first flat index on equal scores; stop when that score is 0; record it; make its
    feature ineligible everywhere and, with `inhibition_radius = r > 0`, every feature at rows
    and columns within `r` of it (clipped to the map). The loop runs over the `kwta` picks,
    each one vectorised over the whole batch.

    Shape: scores [B, C, H, W] -> winners LongTensor [B, kwta, 3] of (feature, row, col) in
    selection order, rows of -1 where fewer than `kwta` winners exist.
    """
    batch, channels, height, width = scores.shape
    device = scores.device
    total = scores.clone()
    flat = total.view(batch, channels * height * width)
    winners = torch.full((batch, kwta, 3), -1, dtype=torch.long, device=device)
    alive = torch.ones(batch, dtype=torch.bool, device=device)
    feature_ids = torch.arange(channels, device=device).view(1, channels, 1, 1)
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    for k in range(kwta):
        best, index = flat.max(dim=1)
        alive &= best != 0
        feature = index // (height * width)
        row = (index // width) % height
        col = index % width
        picked = torch.stack((feature, row, col), dim=1)
        winners[:, k] = torch.where(alive.unsqueeze(1), picked, winners[:, k])
        inhibit = feature_ids == feature.view(batch, 1, 1, 1)
        if inhibition_radius > 0:
            near = ((rows - row.view(batch, 1, 1, 1)).abs() <= inhibition_radius) & \
                   ((cols - col.view(batch, 1, 1, 1)).abs() <= inhibition_radius)
            inhibit = inhibit | near
        total.masked_fill_(inhibit & alive.view(batch, 1, 1, 1), 0)
    return winners


def get_k_winners(potentials: torch.Tensor, kwta: int = 1, inhibition_radius: int = 0,
                  spikes: torch.Tensor | None = None) -> torch.Tensor:
    """Pick up to `kwta` winner neurons per sample: earliest spike first, then largest potential.

    Score, per sample in float32 (SpykeTorch's): `first = T - (number of spiking steps)`, clamped
    to `T - 1`; `value = potentials[first]`; `v = T * max(spikes * value)` over this sample;
    `score = sum over steps of spikes * (value + v)`, summed step after step (a reduction over
    the time dimension would round in an order that depends on the neuron's place in the
    tensor, so equal neurons could score differently). Earlier spikes have more spiking steps and
    so a larger score; among equal spike times the larger value wins; values within about one
    float32 ulp of `v` tie and go to the first flat index. The greedy selection, one winner per
    feature and the inhibition radius, is `select_winners`.

    `spikes` defaults to `sign(potentials)`.

    Shape: potentials [B, T, C, H, W] (and spikes, same) -> LongTensor [B, kwta, 3] of
    (feature, row, col), padded with rows of -1.
    """
    check_rank(potentials, 5, "potentials", WAVE)
    kwta = check_int(kwta, "kwta", 1)
    inhibition_radius = check_int(inhibition_radius, "inhibition_radius", 0)
    if spikes is None:
        spikes = potentials.sign()
    else:
        check_rank(spikes, 5, "spikes", WAVE)
        check_same_shape(potentials, spikes, "potentials", "spikes")
        spikes = spikes.to(potentials.dtype)
    steps = potentials.shape[1]
    first = (steps - spikes.sum(dim=1, keepdim=True)).long().clamp_(0, steps - 1)
    values = potentials.gather(1, first)                       # [B, 1, C, H, W]
    truncated = spikes * values
    v = truncated.flatten(1).max(dim=1).values.mul_(steps).view(-1, 1, 1, 1, 1)
    truncated.addcmul_(spikes, v)
    scores = truncated[:, 0].clone()                            # [B, C, H, W]
    for step in range(1, steps):
        scores += truncated[:, step]
    return select_winners(scores, kwta, inhibition_radius)


def local_normalization(input: torch.Tensor, normalization_radius: int,
                        eps: float = 1e-12) -> torch.Tensor:
    """Divide each channel by its local mean over a `(2r+1) x (2r+1)` box (zero padding).

    The mean is a zero-padded cross-correlation with a float32 kernel of entries
    `1 / (2r+1)^2` (the divisor is always the full box), plus `eps`.

    Shape: [B, C, H, W] -> same.
    """
    check_rank(input, 4, "input", "[B, C, H, W]")
    radius = check_int(normalization_radius, "normalization_radius", 0)
    size = 2 * radius + 1
    kernel = torch.ones(1, 1, size, size, dtype=input.dtype, device=input.device) / (size * size)
    b, c, h, w = input.shape
    means = conv2d(input.reshape(b * c, 1, h, w), kernel, padding=radius) + eps
    return input / means.view(b, c, h, w)


def intensity_lateral_inhibition_kernel(percents) -> torch.Tensor:
    """The kernel of `intensity_lateral_inhibition` from n percentages.

    Size `(2n+1) x (2n+1)`: `percents[d-1]` at Chebyshev distance `d` from the centre, 0 at the
    centre. The shallow Mozafari 2018 model uses `[0.15, 0.12, 0.1, 0.07, 0.05]`.
    """
    percents = torch.as_tensor(percents, dtype=torch.float32).flatten()
    n = percents.numel()
    if n == 0:
        raise ValueError("percents must hold at least one value")
    offsets = torch.arange(-n, n + 1)
    distance = torch.maximum(offsets.view(-1, 1).abs(), offsets.view(1, -1).abs())
    kernel = torch.zeros(2 * n + 1, 2 * n + 1)
    ring = distance > 0
    kernel[ring] = percents[distance[ring] - 1]
    return kernel


def intensity_lateral_inhibition(intensities: torch.Tensor,
                                 inhibition_kernel: torch.Tensor) -> torch.Tensor:
    """Scale each value by `1 + sum of the kernel weights of its strictly weaker neighbours`.

    Per channel; neighbours outside the image count as 0. Despite the name this amplifies local
    maxima relative to their surround.

    Shape: intensities [B, C, H, W], kernel [K, K] (K odd) -> [B, C, H, W].
    """
    check_rank(intensities, 4, "intensities", "[B, C, H, W]")
    check_rank(inhibition_kernel, 2, "inhibition_kernel", "[K, K]")
    size = inhibition_kernel.shape[0]
    if inhibition_kernel.shape[1] != size or size % 2 == 0:
        raise ValueError(f"inhibition_kernel must be square with an odd size, got "
                         f"{tuple(inhibition_kernel.shape)}")
    radius = size // 2
    h, w = intensities.shape[-2:]
    kernel = inhibition_kernel.to(intensities)
    # zero padding: a neighbour outside the image is 0; one pass per non-zero kernel entry keeps
    # the memory at two images' size (unfolding all K*K neighbours at once needs K*K images)
    padded = F.pad(intensities, (radius, radius, radius, radius))
    factors = torch.zeros_like(intensities)
    for u, v in torch.nonzero(kernel).tolist():
        weaker = intensities > padded[..., u:u + h, v:v + w]
        factors.add_(weaker.to(intensities.dtype), alpha=float(kernel[u, v]))
    return intensities * (1 + factors)


def conv2d(input: torch.Tensor, weight: torch.Tensor, padding=0) -> torch.Tensor:
    """`F.conv2d` whose per-sample, per-channel results do not depend on the call (how many
    samples and output channels are computed with them).

    oneDNN runs a batch of one through a different kernel whose float32 rounding differs from
    the batched kernel; a lone sample is therefore computed as a batch of two copies, so that a
    sample gives bit-identical potentials alone or in a batch (and SpykeTorch's `B = 1` calls,
    which convolve T slices at once, are matched).

    A float32 convolution with a one-position output (the kernel covers the whole padded map:
    the decision layers of mozafari2018 and the deep zoo models) is `whole_map_conv2d` instead,
    a float64 matrix product rounded to float32.

    Shape: input [B, C, H, W], weight [F, C, kh, kw] -> [B, F, H', W'].
    """
    whole_map = _whole_map_padding(input, weight, padding)
    if whole_map is not None:
        return whole_map_conv2d(input, weight, whole_map)
    if input.shape[0] == 1:
        return F.conv2d(input.expand(2, *input.shape[1:]), weight, padding=padding)[:1]
    return F.conv2d(input, weight, padding=padding)


def _whole_map_padding(input: torch.Tensor, weight: torch.Tensor, padding) -> tuple[int, int] | None:
    """(rows, cols) of padding when `conv2d` should call `whole_map_conv2d`: float32 maps and
    kernels on the CPU or CUDA (MPS has no float64), no autograd to record, and a kernel that
    covers the whole padded map. None otherwise (`F.conv2d`'s other paddings included)."""
    if isinstance(padding, str) or input.dim() != 4 or weight.dim() != 4:
        return None
    try:
        rows, cols = pair(padding, "padding")
    except TypeError:
        return None
    if (input.dtype != torch.float32 or weight.dtype != torch.float32 or input.device.type not in ("cpu", "cuda")
            or (torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad))):
        return None
    if input.shape[2] + 2 * rows != weight.shape[2] or input.shape[3] + 2 * cols != weight.shape[3]:
        return None
    return rows, cols


def whole_map_conv2d(input: torch.Tensor, weight: torch.Tensor, padding=(0, 0)) -> torch.Tensor:
    """A convolution whose kernel covers the whole zero-padded map (one output position), as a
    matrix product: `potential[b, f] = sum_{c,i,j} input[b, c, i, j] * weight[f, c, pr + i, pc + j]`
    (the zero padding meets only the kernel's border), summed in float64 and rounded once.

    Why float64: on spike inputs the sum is exact, so each element is the correctly rounded
    float32 of the true sum, whatever the order of summation, the batch, or the other channels
    computed with it. (Products of small integers and float32 weights are exact; weights in
    [2^-e, 1] or 0 are multiples of 2^-(e + 23); K such terms of at most 2^k sum exactly while
    log2(K) + k + e <= 30: binary inputs over 4,096 synapses with weights >= 2^-18, where the
    decision weights stay in [0.2, 0.8].) Outside those bounds the float64 sum still rounds to
    the same float32 unless it lies within a few float64 ulps of a float32 rounding boundary.
    On the CPU it runs ~3x faster than oneDNN's convolution (600 channels of 250 x 4 x 4).

    The weight's float64 matrix is remembered on the weight until it changes
    (`spiking.remember`; a new version is refilled in place); `patch_whole_map_matrix` keeps
    it current through updates of a few rows.

    Shape: input [B, C, H, W], weight [F, C, H + 2 pr, W + 2 pc] float32 -> [B, F, 1, 1] float32.
    """
    rows, cols = padding
    height, width = input.shape[2:]

    def inner():
        return weight[:, :, rows:rows + height, cols:cols + width].reshape(weight.shape[0], -1)
    extra = (tuple(weight.shape), weight.stride(), rows, cols)
    matrix = remembered(weight, "_whole_map_matrix", extra, lambda: inner().to(torch.float64),
                        lambda old: old.copy_(inner()))
    product = input.flatten(1).to(torch.float64) @ matrix.t()      # flatten: a batch may be empty
    return product.to(torch.float32).view(input.shape[0], weight.shape[0], 1, 1)


def patch_whole_map_matrix(weight: torch.Tensor, features: torch.Tensor, since: int) -> None:
    """After in-place changes of only the rows `features` (LongTensor) of `weight`, made since
    its version counter read `since`, rewrite those rows of its remembered `whole_map_conv2d`
    matrix rather than converting the whole weight again at the next call (exact R-STDP changes
    one or two kernels a sample); a matrix remembered from another version is forgotten."""
    def rewrite(matrix, extra):
        rows, cols = extra[2:]
        kernel_h, kernel_w = weight.shape[2:]
        if features.numel():
            inner = weight[features, :, rows:kernel_h - rows, cols:kernel_w - cols]
            matrix[features] = inner.reshape(features.numel(), -1).to(torch.float64)
    patch_remembered(weight, "_whole_map_matrix", since, rewrite)
