"""Values derived from a tensor (a weight's flushed copy, its GEMM matrix, whether it lies within
its bounds), remembered on the tensor until it changes.

An entry is keyed by the tensor's address, torch's version counter (which in-place updates and
views share) and the caller's `extra`, and holds the tensor's storage (a detached alias): while
the key names an address no other storage can take it, so a tensor given new storage under the
same version counter (`param.data = new`) cannot meet a stale value. In-place writes through
`tensor.data` do not advance the version and are not seen. Inference tensors have no version
counter: their values are built every time.
"""
from __future__ import annotations

from typing import Callable

import torch


def remembered(tensor: torch.Tensor, name: str, extra, build: Callable[[], torch.Tensor],
               refill: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """`build()`, remembered on `tensor` as the attribute `name` under `extra`. `refill(old)`:
    when only the version changed, recompute into the old value in place (a fresh large buffer
    every call page-faults)."""
    if tensor.is_inference():
        return build()
    key = (tensor.data_ptr(), tensor._version, extra)
    cached = getattr(tensor, name, None)
    if cached is not None and cached[0] == key:
        return cached[1]
    if refill is not None and cached is not None and cached[0][0] == key[0] and cached[0][2] == extra:
        value = refill(cached[1])
    else:
        value = build()
    setattr(tensor, name, (key, value, tensor.detach()))
    return value


def patch_remembered(tensor: torch.Tensor, name: str, since: int,
                     rewrite: Callable[[torch.Tensor, object], None], extra=None) -> None:
    """After in-place changes of `tensor` made since its version counter read `since`, which
    `rewrite(value, extra)` carries into the remembered value in place, re-key the value to the
    current version. A value remembered from another version (or, given `extra`, under another
    `extra`) is forgotten."""
    cached = getattr(tensor, name, None)
    if cached is None or tensor.is_inference():
        return
    (address, version, remembered_extra), value, storage = cached
    if (address, version) != (tensor.data_ptr(), since) or (extra is not None and extra != remembered_extra):
        setattr(tensor, name, None)
        return
    rewrite(value, remembered_extra)
    setattr(tensor, name, ((address, tensor._version, remembered_extra), value, storage))


def within_bounds(weight: torch.Tensor, lower: float, upper: float) -> bool:
    """Whether every weight lies in [lower, upper] (the learning rules ask: the first update of
    out-of-bound weights clamps every feature, so it must be applied alone). The answer is
    remembered with torch's version counter of the tensor: a rule that leaves the weights
    clamped marks them (`mark_within_bounds`), so a training loop scans them only after
    outside edits."""
    key = (weight._version, lower, upper)
    cached = getattr(weight, "_within_bounds", None)
    if cached == key:
        return True
    inside = True
    if weight.numel():
        low, high = weight.aminmax()
        inside = bool(low >= lower) and bool(high <= upper)
    if inside:
        mark_within_bounds(weight, lower, upper)
    return inside


def mark_within_bounds(weight: torch.Tensor, lower: float, upper: float) -> None:
    """Record that `weight`, as it is now, lies within [lower, upper]."""
    weight._within_bounds = (weight._version, lower, upper)
