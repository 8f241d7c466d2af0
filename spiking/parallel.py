"""Data-parallel learning: one global batch split across the ranks of a torch.distributed group.

Two update modes, matching the learning stages' `--batch-update`:

- summed: a batched STDP step sums per-sample rates computed against the same starting weights,
  so the sum over ranks of each rank's summed rates is exactly the rate sum of the whole global
  batch. Inside `summed_across_ranks()`, `STDP.apply_` all-reduces (sums) its rates over the
  group before touching the weights: N processes compute what one process computes.
- exact (the default): each rank runs the sequential algorithm on its own shard (`summed_change`),
  then the ranks' weight changes are summed: `W = clamp(W0 + sum_r (W_r - W0))`. Within a shard
  this is SpykeTorch's per-sample algorithm; across ranks it is a summed update of N sequential
  runs, so N processes do not compute what one process computes (documented in the README).

The learners sum their sample counts with `total`, so every rank keeps the same schedules and
adaptive rates. Outside `summed_across_ranks` everything here is a no-op. Every rank must make
the same sequence of learning calls, an empty shard included.
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


_LOCAL = object()          # marks a block whose updates stay on this rank (summed_change)


def active() -> bool:
    return bool(_GROUP) and _GROUP[-1] is not _LOCAL


@contextlib.contextmanager
def summed_change(weight: torch.Tensor, lower_bound: float, upper_bound: float):
    """Data-parallel exact learning: inside the block each rank updates `weight` on its own
    samples, one after the other (the sequential algorithm on its shard); on leaving, the
    ranks' changes are summed: `W = clamp(W_before + sum over ranks of (W_rank - W_before))`.
    With one rank, or not data-parallel, the block's own result is kept as it is."""
    if not active():
        yield
        return
    group = _GROUP[-1]
    before = weight.detach().clone()
    _GROUP.append(_LOCAL)
    try:
        yield
    finally:
        _GROUP.pop()
    _GROUP.append(group)
    try:
        change = all_sum_(weight.detach() - before)
    finally:
        _GROUP.pop()
    with torch.no_grad():
        weight.copy_(before.add_(change).clamp_(lower_bound, upper_bound))


def all_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over the ranks, in place, when data-parallel learning is active."""
    if active():
        import torch.distributed as dist
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=_GROUP[-1])
    return tensor


def total(*counts: int) -> tuple[int, ...] | int:
    """Integer counts summed over the ranks (unchanged when not data-parallel)."""
    if not active():
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
