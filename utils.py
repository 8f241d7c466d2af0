"""Small helpers: the one-line error type, fault injection, seeding, devices and versions,
atomic file writes and figures. Checkpoints are in `checkpoints.py`, run folders in `run_folder.py`."""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import random
import subprocess
import sys

import numpy as np
import torch

PROJECT_ROOT = os.path.dirname(os.path.abspath(__file__))


class UserError(Exception):
    """A problem with the user's input or environment, reported in one line without a traceback."""


FAULT_ENV = "SNN_FAULT"
_fault_hits: dict = {}


def fault_point(name: str) -> None:
    """Fault-injection hook for tests: with `SNN_FAULT=name:N` in the environment, the N-th time
    the point `name` is reached the process kills itself with SIGKILL, exactly as a crash or
    `kill -9` at that moment would. Points: `encode` (each encoding batch), `batch` (each
    training batch), `write` (halfway through every atomic file write)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    if _fault_hits[name] == int(count or 1):
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- seeding, devices, versions

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def derived_seed(seed: int, *labels) -> int:
    """A seed for one purpose (a split, a stage's epoch order...), stable across runs."""
    text = ":".join(str(x) for x in (seed,) + labels)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") % 2 ** 63


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UserError(f"unknown device {name!r} (use auto, cpu or cuda[:N])") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
    return device


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (every call: a reused worker keeps its old count)."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    try:        # from the package metadata: importing scikit-learn takes a second
        sklearn = version("scikit-learn")
    except PackageNotFoundError:
        sklearn = None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn, "platform": platform.platform()}


def git_commit() -> str | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5).stdout
        return (commit + ("-dirty" if dirty.strip() else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------- atomic files

def fsync_replace(temporary: str, path: str) -> None:
    """Flush `temporary` to disk and rename it over `path` (atomic on POSIX)."""
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    try:
        directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:
        pass


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write via a temporary file in the same folder; a crash leaves the old file or the new one."""
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data[:len(data) // 2])
            handle.flush()
            fault_point("write")          # a crash here leaves a half-written temporary file
            handle.write(data[len(data) // 2:])
        fsync_replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def save_figure(figure, path: str) -> None:
    """Render a matplotlib figure to PNG atomically and close it."""
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)
