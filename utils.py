"""Small helpers: errors, seeding, devices, atomic files, checkpoints and run directories."""
from __future__ import annotations

import datetime
import errno
import fcntl
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
CHECKPOINT_MAGIC = b"SNNCKPT1"          # 8 bytes, then the payload's sha256, then the payload
CHECKPOINT_FORMAT = 1


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


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(path: str, payload: dict) -> None:
    """Checkpoint = magic + sha256 + `torch.save` bytes of tensors and plain data, written atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    atomic_write_bytes(path, CHECKPOINT_MAGIC + hashlib.sha256(data).digest() + data)


def load_checkpoint(path: str) -> dict:
    """Verify and load a checkpoint as data (`weights_only`: no pickled code is ever executed)."""
    try:
        with open(path, "rb") as handle:
            blob = handle.read()
    except OSError as error:
        raise UserError(f"cannot read checkpoint {path}: {error.strerror or error}") from error
    if len(blob) < 40 or blob[:8] != CHECKPOINT_MAGIC:
        raise UserError(f"{path} is not a checkpoint of this tool (bad header)")
    if hashlib.sha256(blob[40:]).digest() != blob[8:40]:
        raise UserError(f"checkpoint {path} is corrupted or truncated (checksum mismatch)")
    try:
        payload = torch.load(io.BytesIO(blob[40:]), map_location="cpu", weights_only=True)
    except Exception as error:   # noqa: BLE001 - any unpickling failure means "not our data"
        raise UserError(f"checkpoint {path} cannot be loaded as data: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint {path} has an unsupported format "
                        f"({payload.get('format') if isinstance(payload, dict) else type(payload).__name__})")
    return payload


# ---------------------------------------------------------------- run directories

class RunDirectory:
    """A run's own folder, created exclusively and locked while a process uses it.

    `create` refuses an existing name (runs never overwrite each other); `open` reattaches to an
    existing run (resume). The lock (`flock` on `.lock`) makes a second process using the same
    run fail at once with a clear message.
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self._lock = None

    @classmethod
    def create(cls, out_dir: str, name: str) -> "RunDirectory":
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create output folder {out_dir}: {error.strerror}") from error
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise UserError(f"output folder {out_dir} is not writable")
        run = cls(os.path.join(out_dir, name))
        try:
            os.mkdir(run.path)
        except FileExistsError as error:
            raise UserError(f"run {run.path} already exists: pick another --run-name, or continue it "
                            f"with --resume {run.path}") from error
        except OSError as error:
            raise UserError(f"cannot create run folder {run.path}: {error.strerror}") from error
        run.lock()
        return run

    @classmethod
    def open(cls, path: str) -> "RunDirectory":
        """Reattach to a run (resume); temporary files left by a killed writer are removed."""
        if not os.path.isdir(path):
            raise UserError(f"no run folder at {path}")
        run = cls(path)
        run.lock()
        for folder, _, names in os.walk(run.path):
            for name in names:
                if ".tmp" in name:
                    os.remove(os.path.join(folder, name))
        return run

    def lock(self) -> None:
        handle = open(os.path.join(self.path, ".lock"), "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise UserError(f"run {self.path} is in use by another process") from error
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def release(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def folder(self, *parts: str) -> str:
        path = os.path.join(self.path, *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def file(self, *parts: str) -> str:
        path = os.path.join(self.path, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path


def default_run_name(model: str, dataset: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{model}-{dataset}-{stamp}-{os.getpid()}"


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)
