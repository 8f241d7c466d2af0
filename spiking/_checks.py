"""Argument checks shared by the spiking core.

Every public primitive validates its input here so that a wrong shape or a meaningless value fails
with a message that names what was expected, instead of broadcasting into a silent wrong answer.
"""
from __future__ import annotations

import numbers

import torch


def check_rank(tensor: torch.Tensor, rank: int, name: str, layout: str) -> None:
    """Raise if `tensor` is not a tensor of the given rank; `layout` is e.g. "[B, T, C, H, W]"."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(tensor).__name__}")
    if tensor.dim() != rank:
        raise ValueError(f"{name} must have shape {layout} ({rank} dims), got {tuple(tensor.shape)}")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_b} must have the same shape as {name_a}: "
                         f"{tuple(b.shape)} vs {tuple(a.shape)}")


def check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_threshold(threshold, name: str = "threshold"):
    """A firing threshold is None (fire at the last step) or a non-negative scalar."""
    if threshold is None:
        return None
    if isinstance(threshold, torch.Tensor):
        if threshold.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(threshold.shape)}")
        value = float(threshold)
    elif isinstance(threshold, numbers.Real) and not isinstance(threshold, bool):
        value = float(threshold)
    else:
        raise TypeError(f"{name} must be None or a non-negative number, got {threshold!r}")
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0 (a negative threshold makes silent neurons fire), "
                         f"got {value}")
    return threshold


def pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints, as torch's conv and pool arguments."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        return int(value[0]), int(value[1])
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
