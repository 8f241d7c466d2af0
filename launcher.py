"""The data-parallel launcher: `--nproc N` spawns N ranks on this machine (gloo on CPU, NCCL on
GPUs) that meet on loopback; under torchrun the ranks come from its environment.
"""
from __future__ import annotations

import os

import torch

from utils import UserError, eprint, resolve_device


def spawn_ranks(argv, runtime) -> dict:
    """`--nproc N` on one machine (`runtime`: a `run_config.Runtime`): N spawned ranks meeting on
    loopback; returns rank 0's metrics."""
    import socket
    import torch.multiprocessing as mp
    if resolve_device(runtime.device).type == "cuda" and runtime.nproc > torch.cuda.device_count():
        raise UserError(f"--nproc {runtime.nproc} needs one GPU per process; {torch.cuda.device_count()} "
                        f"visible (use --device cpu for CPU processes)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    import logging
    # when one rank fails, spawn terminates the others and says so: the rank's own line suffices
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    results = mp.get_context("spawn").SimpleQueue()
    try:
        mp.spawn(_rank_entry, args=(argv, runtime.nproc, port, results), nprocs=runtime.nproc, join=True)
    except (mp.ProcessExitedException, mp.ProcessRaisedException) as error:
        reports = []
        while not results.empty():
            reports.append(results.get())
        # the root cause is a rank that ended cleanly with an error status (and printed its
        # one-line message); the others then lost their peer in a collective
        codes = [code for kind, _, code in reports if kind == "exit" and code]
        if codes:
            raise SystemExit(codes[0]) from None
        if isinstance(error, mp.ProcessExitedException):
            eprint(f"error: process {error.error_index} of {runtime.nproc} was killed "
                   f"(exit {error.exit_code}); continue with --resume RUN_DIR")
            raise SystemExit(1) from None
        raise
    metrics = [payload for kind, rank, payload in (results.get() for _ in range(runtime.nproc))
               if kind == "done" and rank == 0]
    return metrics[0] if metrics else {}


def _rank_entry(rank: int, argv: list, world: int, port: int, results) -> None:
    """One spawned rank; reports ("done", rank, metrics) or ("exit", rank, status) to the parent."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import train        # the CLI, as this rank's process runs it
    try:
        metrics = train.main(argv)
    except SystemExit as stop:
        results.put(("exit", rank, stop.code))
        raise
    results.put(("done", rank, metrics))


def join_group(runtime, evaluating: bool = False) -> tuple[int, int]:
    """(rank, world): (0, 1) in one process; under torchrun or --nproc, join the process group
    (NCCL when the command line asks for CUDA, gloo otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist
    if evaluating:
        raise UserError("--eval-only runs in one process (not under torchrun or --nproc)")
    if not dist.is_initialized():
        backend = "nccl" if resolve_device(runtime.device).type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method="env://", rank=int(os.environ["RANK"]),
                                world_size=world)
    return dist.get_rank(), world
