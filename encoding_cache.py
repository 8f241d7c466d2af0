"""Encoded datasets on disk, keyed by the dataset and every front-end parameter, so later stages
and runs never re-encode. Writes are atomic and verified (sha256 in a manifest written last).
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os

import numpy as np

from s1c1 import FORMAT_VERSION, FrontEnd
from utils import atomic_write_json, fsync_replace


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class EncodingCache:
    """Encoded datasets on disk: `<root>/<name>-<frontend key>.npy` plus a `.json` manifest.

    The manifest records the front-end parameters, the shape and the file's sha256; a file
    whose manifest is missing, names other parameters or does not match its checksum is
    reported and rebuilt, never used. Loaded arrays are memory-mapped (read-only).
    """

    def __init__(self, root: str):
        self.root = root

    def paths(self, name: str, config: FrontEnd) -> tuple[str, str]:
        stem = os.path.join(self.root, f"{name}-{config.key()}")
        return stem + ".npy", stem + ".json"

    @contextlib.contextmanager
    def lock(self, name: str, config: FrontEnd):
        """Hold `<entry>.lock` (an advisory lock): processes sharing a cache (a parallel sweep,
        data-parallel ranks) encode an entry once; the others wait, then load it."""
        try:
            import fcntl
        except ImportError:                 # no advisory locks: concurrent writers stay atomic
            yield
            return
        try:
            os.makedirs(self.root, exist_ok=True)
            handle = open(self.paths(name, config)[0] + ".lock", "a")
        except OSError:                     # an unwritable cache folder: no lock (and no cache)
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load(self, name: str, config: FrontEnd, source_id: str, expected_count: int,
             warn=print) -> np.ndarray | None:
        data_path, meta_path = self.paths(name, config)
        if not os.path.exists(data_path):
            return None
        try:
            with open(meta_path) as handle:
                meta = json.load(handle)
            if meta.get("frontend") != json.loads(json.dumps(dataclasses.asdict(config))):
                raise ValueError("it was built with other front-end parameters")
            if meta.get("source") != source_id or meta.get("count") != expected_count:
                raise ValueError("it was built from other source data")
            if _sha256(data_path) != meta.get("sha256"):
                raise ValueError("its checksum does not match (truncated or corrupted)")
            array = np.load(data_path, mmap_mode="r")
            if array.dtype != np.uint8 or list(array.shape) != meta.get("shape"):
                raise ValueError("its shape or type does not match its manifest")
            return array
        except (OSError, ValueError, json.JSONDecodeError) as error:
            warn(f"encoding cache {os.path.basename(data_path)} is stale or damaged ({error}); rebuilding")
            return None

    def save(self, name: str, config: FrontEnd, source_id: str, array: np.ndarray) -> np.ndarray:
        """Write atomically (temporary file, fsync, rename), manifest last; return a memmap."""
        os.makedirs(self.root, exist_ok=True)
        data_path, meta_path = self.paths(name, config)
        for leftover in glob.glob(f"{data_path}.tmp*"):          # from a writer that was killed
            os.remove(leftover)
        temporary = f"{data_path}.tmp{os.getpid()}"
        with open(temporary, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array))
        fsync_replace(temporary, data_path)
        atomic_write_json(meta_path, {"frontend": dataclasses.asdict(config), "source": source_id,
                                      "count": int(len(array)), "shape": list(array.shape),
                                      "sha256": _sha256(data_path), "format": FORMAT_VERSION})
        return np.load(data_path, mmap_mode="r")
