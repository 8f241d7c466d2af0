"""Run folders: created exclusively (runs never overwrite each other), locked while a process
uses them, reopened for `--resume`."""
from __future__ import annotations

import datetime
import errno
import fcntl
import os

from utils import UserError


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
        check_run_name(name)
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


def check_run_name(name: str) -> None:
    """A run's name is one folder inside the output folder: no path separator, not '.' or '..'."""
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise UserError(f"--run-name {name!r}: a run's name is one folder name inside --out-dir "
                        f"(no {os.sep!r}, not '.' or '..')")


def default_run_name(model: str, dataset: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{model}-{dataset}-{stamp}-{os.getpid()}"
