"""Feature visualisation: a layer's kernels as a grid, and deep features projected to input space.

Pure tensor functions; saving images is left to the caller (the trainer).
"""
from __future__ import annotations

import math

import torch

from ._checks import check_rank, pair


def kernel_grid(weight: torch.Tensor, columns: int | None = None, padding: int = 1,
                reduce: str = "max") -> torch.Tensor:
    """Tile a layer's kernels into one image, each kernel min-max scaled to [0, 1].

    Input channels are combined per pixel with `reduce` ("max" or "mean"); a single-channel
    layer shows its kernels as they are.

    Shape: weight [F, C, kh, kw] -> image [rows * (kh + p) - p, columns * (kw + p) - p].
    """
    check_rank(weight, 4, "weight", "[F, C, kh, kw]")
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    planes = weight.detach().float().cpu()
    planes = planes.amax(dim=1) if reduce == "max" else planes.mean(dim=1)   # [F, kh, kw]
    lo = planes.flatten(1).min(dim=1).values.view(-1, 1, 1)
    hi = planes.flatten(1).max(dim=1).values.view(-1, 1, 1)
    planes = (planes - lo) / (hi - lo).clamp(min=1e-12)
    count, kh, kw = planes.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    image = torch.zeros(rows * (kh + padding) - padding, columns * (kw + padding) - padding)
    for index in range(count):
        r, c = divmod(index, columns)
        image[r * (kh + padding):r * (kh + padding) + kh,
              c * (kw + padding):c * (kw + padding) + kw] = planes[index]
    return image


def reconstruct_features(stack) -> torch.Tensor:
    """Project every feature of the last conv layer of a conv/pool stack back to input space.

    `stack` lists the layers from the input on: `("conv", weight [F, C, kh, kw])` or
    `("pool", kernel_size[, stride])`. The first conv layer's features are its kernels. Through
    a later conv layer, for each kernel tap `(u, v)` the previous features are multiplied by that
    tap's weight for each input channel, the maximum over input channels is taken and added into
    a larger canvas at offset `(u, v) * cumulative stride`. Through a pooling layer the previous
    feature is centred in a canvas enlarged by the pooling window (times the stride so far), and
    the cumulative stride is multiplied by the pooling stride. Negative values are clamped to 0.

    Shape: -> [F_last, C_input, H, W].
    """
    features = None
    stride = 1
    for entry in stack:
        kind = entry[0]
        if kind == "pool":
            kernel = pair(entry[1], "kernel_size")
            pool_stride = pair(entry[2] if len(entry) > 2 else entry[1], "stride")
            if features is not None:
                count, channels, h, w = features.shape
                grow_h, grow_w = (kernel[0] - 1) * stride, (kernel[1] - 1) * stride
                canvas = features.new_zeros(count, channels, h + grow_h, w + grow_w)
                canvas[:, :, grow_h // 2:grow_h // 2 + h, grow_w // 2:grow_w // 2 + w] = features
                features = canvas
            stride *= pool_stride[0]
        elif kind == "conv":
            weight = entry[1].detach().float().cpu()
            check_rank(weight, 4, "conv weight", "[F, C, kh, kw]")
            if features is None:
                features = weight.clone()
                continue
            if weight.shape[1] != features.shape[0]:
                raise ValueError(f"conv weight expects {weight.shape[1]} input features, the stack "
                                 f"so far has {features.shape[0]}")
            count, _, kh, kw = weight.shape
            _, channels, h, w = features.shape
            canvas = features.new_zeros(count, channels, h + (kh - 1) * stride, w + (kw - 1) * stride)
            for u in range(kh):
                for v in range(kw):
                    tap = weight[:, :, u, v].view(count, -1, 1, 1, 1) * features.unsqueeze(0)
                    canvas[:, :, u * stride:u * stride + h, v * stride:v * stride + w] += \
                        tap.amax(dim=1)
            features = canvas
        else:
            raise ValueError(f"stack entries are ('conv', weight) or ('pool', kernel), got {kind!r}")
    if features is None:
        raise ValueError("the stack holds no conv layer")
    return features.clamp(min=0)


def project_through_filters(features: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Map features over filter-response channels back to pixels: sum over channels of each
    channel's map convolved (transposed) with that channel's filter kernel.

    Shape: features [F, C, h, w], kernels [C, 1, k, k] (e.g. `Filter.kernels`) ->
    [F, h + k - 1, w + k - 1].
    """
    check_rank(features, 4, "features", "[F, C, h, w]")
    check_rank(kernels, 4, "kernels", "[C, 1, k, k]")
    if kernels.shape[0] != features.shape[1]:
        raise ValueError(f"{kernels.shape[0]} kernels for {features.shape[1]} feature channels")
    return torch.nn.functional.conv_transpose2d(features.float(), kernels.float()).squeeze(1)
