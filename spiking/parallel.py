"""Data-parallel learning: one global batch split across the ranks of a torch.distributed group.

A batched STDP step sums per-sample rates computed against the same starting weights, so the
sum over ranks of each rank's summed rates is exactly the rate sum of the whole global batch.
Inside `summed_across_ranks()`, `STDP.apply_` all-reduces (sums) its rates over the group
before touching the weights, and the learners sum their sample counts with `total`, so every
rank applies the same update and keeps the same schedules. Outside it (the default) both are
no-ops. Every rank must make the same sequence of learning calls, an empty shard included.
"""
from __future__ import annotations

import contextlib

import torch

_GROUP: list = []          # the active process group (None: the default group), while entered


@contextlib.contextmanager
def summed_across_ranks(group=None):
    """Sum learning updates and sample counts over `group` (default: the whole world)."""
    import torch.distributed as dist
    if not dist.is_initialized():
        raise RuntimeError("summed_across_ranks needs an initialised torch.distributed process group")
    _GROUP.append(group)
    try:
        yield
    finally:
        _GROUP.pop()


def active() -> bool:
    return bool(_GROUP)


def all_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over the ranks, in place, when data-parallel learning is active."""
    if _GROUP:
        import torch.distributed as dist
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=_GROUP[-1])
    return tensor


def total(*counts: int) -> tuple[int, ...] | int:
    """Integer counts summed over the ranks (unchanged when not data-parallel)."""
    if not _GROUP:
        return counts if len(counts) != 1 else counts[0]
    summed = all_sum_(torch.tensor(counts, dtype=torch.float64, device=_device()))
    values = tuple(int(round(v)) for v in summed.tolist())
    return values if len(values) != 1 else values[0]


def _device() -> torch.device:
    import torch.distributed as dist
    # NCCL reduces CUDA tensors only; gloo reduces CPU tensors
    if dist.get_backend(_GROUP[-1]) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
