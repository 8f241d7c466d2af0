"""Run many training runs: in this process, on a local process pool, or as Ray tasks.

`compare.py --models ... --seeds ... --set key=v1,v2` plans one run per (model, setting
values, seed) with `plan_runs` and executes them with `execute_runs`:

- `max_parallel == 1` and no Ray: one after another in this process;
- otherwise without Ray: a pool of fresh processes (`spawn`, one process per run, so every run
  starts with clean torch state and its own `--threads`);
- with `ray_address`: one Ray task per run (`num_cpus=cpus_per_run`) calling `train.main`.
  Unless the cluster has a shared filesystem (`shared_fs`), the task trains into a private
  temporary folder and returns it packed (tar.gz bytes); the driver unpacks it under the
  sweep's root, so a sweep leaves the same folders whether it ran locally or on a cluster.

Every run goes to `root/<name>` with an absolute path. A run whose folder holds metrics.json
is finished and skipped; a folder without it is an interrupted run and is resumed (on a
cluster without a shared filesystem, its folder travels to the task and back).

Ray is an optional extra (`pip install -r requirements-ray.txt`), imported only here and only
when a Ray address is given.
"""
from __future__ import annotations

import concurrent.futures
import io
import itertools
import multiprocessing
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass

from utils import UserError, eprint

PROJECT_ROOT = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class RunSpec:
    """One training run: its folder name and its train.py arguments (without --out-dir,
    --run-name and --threads, which the executor adds)."""
    name: str
    argv: tuple


def split_values(text: str) -> list[str]:
    """'1,2,(3, 4),"a,b"' -> ['1', '2', '(3, 4)', '"a,b"']: commas inside brackets or quotes
    do not separate values."""
    values, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    values.append("".join(current).strip())
    if any(v == "" for v in values) or depth or quote:
        raise UserError(f"--set value list {text!r} is malformed (values are separated by commas)")
    return values


def parse_sweep_settings(items: list[str]) -> dict[str, list[str]]:
    """["conv1.threshold=10,15", "post=own"] -> {"conv1.threshold": ["10", "15"], "post": ["own"]}."""
    settings = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=V1,V2,..., e.g. --set conv1.threshold=10,15")
        settings[key.strip()] = split_values(text)
    return settings


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "_"


def plan_runs(models: list[str], seeds: list[int], settings: dict[str, list[str]],
              train_args: list[str]) -> list[RunSpec]:
    """The grid models x setting values x seeds, in that nesting order."""
    keys = list(settings)
    specs = []
    for model in models:
        for values in itertools.product(*(settings[k] for k in keys)):
            chosen = list(zip(keys, values))
            for seed in seeds:
                name = "-".join([model] + [_slug(f"{k}{v}") for k, v in chosen] + [f"seed{seed}"])
                argv = ["--model", model, "--seed", str(seed)]
                for key, value in chosen:
                    argv += ["--set", f"{key}={value}"]
                specs.append(RunSpec(name, tuple(argv) + tuple(train_args)))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UserError("two runs of the sweep would share a folder name; make --set values distinct")
    return specs


def absolute_paths(train_args: list[str]) -> list[str]:
    """train.py arguments with --data-root, --cache-dir and --init-from made absolute (tasks run
    elsewhere)."""
    out = list(train_args)
    for index, token in enumerate(out):
        for flag in ("--data-root", "--cache-dir", "--init-from"):
            if token == flag and index + 1 < len(out):
                out[index + 1] = os.path.abspath(out[index + 1])
            elif token.startswith(flag + "="):
                out[index] = flag + "=" + os.path.abspath(token.split("=", 1)[1])
    return out


# ---------------------------------------------------------------- one run (in any process)

def pack_folder(path: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(path, arcname=os.path.basename(path))
    return buffer.getvalue()


def unpack_folder(blob: bytes, root: str, name: str) -> str:
    """Unpack a packed run folder as root/name, atomically: a partial unpack is never taken for
    a run, and an older (interrupted) folder of the same name is moved aside before the new one
    is renamed into place and deleted only after, so one of the two is always complete."""
    staging = tempfile.mkdtemp(prefix=f".{name}.unpack-", dir=root)
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as archive:
            archive.extractall(staging, filter="data")
        entries = os.listdir(staging)
        if len(entries) != 1:
            raise UserError(f"packed run {name} holds {len(entries)} folders, expected 1")
        target = os.path.join(root, name)
        backup = None
        if os.path.exists(target):
            backup = os.path.join(staging, ".previous")
            os.replace(target, backup)
        try:
            os.replace(os.path.join(staging, entries[0]), target)
        except BaseException:
            if backup is not None:
                os.replace(backup, target)
            raise
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run_one(argv: list[str], root: str, name: str, threads: int, packed_partial: bytes | None = None,
            pack: bool = False) -> dict:
    """Train one run into root/name through `train.main`; returns {"name", "status" ("done" or
    "failed"), "exit_code", "metrics", "archive" (the packed folder when `pack`)}.

    With `pack` the run is trained in a private temporary folder (a copy of `packed_partial`,
    if given, is resumed) and returned packed; `root` is then only a name for messages."""
    if PROJECT_ROOT not in sys.path:
        sys.path.insert(0, PROJECT_ROOT)
    import train
    work = tempfile.mkdtemp(prefix="snn-run-") if pack else root
    try:
        path = os.path.join(work, name)
        if packed_partial is not None:
            unpack_folder(packed_partial, work, name)
        if os.path.isdir(path):
            full = ["--resume", path, "--threads", str(threads)] + resumable_args(argv)
        else:
            full = list(argv) + ["--out-dir", work, "--run-name", name, "--threads", str(threads)]
        result = {"name": name, "status": "done", "exit_code": 0, "metrics": None, "archive": None,
                  "error": None}
        try:
            result["metrics"] = train.main(full)
        except SystemExit as stop:
            result.update(status="interrupted" if stop.code == 130 else "failed", exit_code=stop.code)
        except Exception as error:      # a bug in a run: report it, keep its folder, go on
            import traceback
            traceback.print_exc()
            result.update(status="failed", exit_code=1, error=f"{type(error).__name__}: {error}")
        result["folder"] = os.path.isdir(path)
        if pack and os.path.isdir(path):
            result["archive"] = pack_folder(path)
        return result
    finally:
        if pack:
            shutil.rmtree(work, ignore_errors=True)


def split_train_args(argv: list[str], own: set[str]) -> tuple[list[str], list[str]]:
    """Separate train.py options (with their values) from compare.py's own arguments."""
    import train
    options = {name: action for action in train.build_parser()._actions for name in action.option_strings}
    mine, forward = [], []
    index = 0
    while index < len(argv):
        token = argv[index]
        name = token.split("=", 1)[0]
        index += 1
        if name not in options or name in own:
            mine.append(token)
            continue
        forward.append(token)
        nargs = options[name].nargs
        if "=" in token or nargs == 0:
            continue
        if nargs in (None, 1):
            forward += argv[index:index + 1]
            index += 1
        else:                                   # "+" / "*": values up to the next option
            while index < len(argv) and not argv[index].startswith("--"):
                forward.append(argv[index])
                index += 1
    return mine, forward


def resumable_args(argv) -> list[str]:
    """The runtime flags of `argv` that a resumed run may take again (`train.resumable_overrides`:
    --nproc, --device, --data-root, --cache-dir, ...), with their values."""
    import train
    parser = train.build_parser()
    options = {name for action in parser._actions for name in action.option_strings}
    fixed = options - train.resumable_overrides(parser) | {"--resume", "--threads"}
    return split_train_args(list(argv), fixed)[1]


# ---------------------------------------------------------------- executors

def execute_runs(specs: list[RunSpec], root: str, cpus_per_run: int = 1, max_parallel: int | None = None,
                 ray_address: str | None = None, shared_fs: bool = False, log=eprint) -> list[dict]:
    """Run every spec not yet finished under `root`; returns one result per spec, in order
    (finished ones as {"status": "skipped"})."""
    root = os.path.abspath(root)
    os.makedirs(root, exist_ok=True)
    results, pending = {}, []
    for spec in specs:
        if os.path.exists(os.path.join(root, spec.name, "metrics.json")):
            log(f"{spec.name}: already finished, skipped")
            results[spec.name] = {"name": spec.name, "status": "skipped", "exit_code": 0}
        else:
            pending.append(spec)
    if ray_address:
        done = _execute_ray(pending, root, cpus_per_run, max_parallel, ray_address, shared_fs, log)
    elif (max_parallel or _default_parallel(cpus_per_run)) <= 1 or len(pending) <= 1:
        done = []
        for spec in pending:
            done.append(_report(run_one(list(spec.argv), root, spec.name, cpus_per_run), log))
            if done[-1]["status"] == "interrupted":
                break
    else:
        done = _execute_pool(pending, root, cpus_per_run, max_parallel or _default_parallel(cpus_per_run), log)
    results.update({r["name"]: r for r in done})
    if any(r["status"] == "interrupted" for r in done):
        raise KeyboardInterrupt
    return [results[s.name] for s in specs]


def _default_parallel(cpus_per_run: int) -> int:
    return max(1, (os.cpu_count() or 1) // cpus_per_run)


def _report(result: dict, log) -> dict:
    if result["status"] == "done":
        accuracy = (result.get("metrics") or {}).get("accuracy")
        log(f"{result['name']}: done" + (f", test accuracy {accuracy:.4f}" if accuracy is not None else ""))
    elif result["status"] == "failed":
        why = result.get("error") or f"exit {result['exit_code']}"
        kept = "; its folder is kept and a rerun resumes it" if result.get("folder") else ""
        log(f"{result['name']}: failed ({why}){kept}")
    return result


def _failed(spec, error) -> dict:
    return {"name": spec.name, "status": "failed", "exit_code": None, "metrics": None, "archive": None,
            "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
            "folder": None}


def _execute_pool(specs, root, cpus_per_run, workers, log) -> list[dict]:
    log(f"{len(specs)} runs on a local pool of {workers} processes, {cpus_per_run} thread(s) each")
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, max_tasks_per_child=1)
    done = []
    try:
        futures = {pool.submit(run_one, list(s.argv), root, s.name, cpus_per_run): s for s in specs}
        for future in concurrent.futures.as_completed(futures):
            try:
                result = future.result()
            except Exception as error:      # a worker killed (out of memory...), a broken pool
                result = _failed(futures[future], error)
            done.append(_report(result, log))
            if result["status"] == "interrupted":
                break
    finally:
        # Ctrl-C (or an interrupted run): queued runs are cancelled, running ones stop on their own
        pool.shutdown(wait=True, cancel_futures=True)
    return done


def _execute_ray(specs, root, cpus_per_run, max_parallel, address, shared_fs, log) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise UserError("--ray-address needs Ray: pip install -r requirements-ray.txt") from None
    if not ray.is_initialized():
        began = time.time()
        try:
            if address == "local":
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
            else:
                ray.init(address=address)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"cannot reach the Ray cluster at {address}: {first}") from None
        log(f"connected to Ray ({address}) in {time.time() - began:.1f}s")
    largest = max((node.get("Resources", {}).get("CPU", 0) for node in ray.nodes() if node.get("Alive")),
                  default=0)
    if cpus_per_run > largest:
        raise UserError(f"--cpus-per-run {cpus_per_run}: the largest node of the Ray cluster has "
                        f"{largest:g} CPUs, so no run could ever start")
    # tasks import the project from the same path on every node (see the README)
    task = ray.remote(num_cpus=cpus_per_run, max_retries=0,
                      runtime_env={"env_vars": {"PYTHONPATH": PROJECT_ROOT}})(run_one)
    limit = max_parallel or len(specs) or 1
    queue, running, done = list(specs), {}, []
    log(f"{len(specs)} runs as Ray tasks ({cpus_per_run} CPU each, at most {limit} at once)")
    try:
        while queue or running:
            while queue and len(running) < limit:
                spec = queue.pop(0)
                partial = os.path.join(root, spec.name)
                blob = pack_folder(partial) if (not shared_fs and os.path.isdir(partial)) else None
                ref = task.remote(list(spec.argv), root, spec.name, cpus_per_run, blob, not shared_fs)
                running[ref] = spec
            ready, _ = ray.wait(list(running), num_returns=1)
            spec = running.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayError as error:        # the task or its node died
                result = _failed(spec, error)
            if result.get("archive") is not None:
                unpack_folder(result.pop("archive"), root, spec.name)
            done.append(_report(result, log))
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref, force=True)
        raise
    return done
