"""The trainer's node cache: every split's node tensors, computed once through the frozen blocks.

A stage reads node `stage.input_node` (see `models.base`) either as spike times ("times", uint8
[N, C, H, W], T = never) or as final maps ("final", uint8 {0, 1}: spiked by the last step). A node
is computed from the deepest node already cached below it (times can give finals, not the
reverse) and kept in memory as uint8, so a stage's epochs cost only its own arithmetic. When a
stage has learned, the nodes after its input are stale and dropped (`drop_after`).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from spiking import times as st


class NodeCache:
    """Node arrays of the splits `splits` ({name: network_trainer.Split}) of `model`.

    `bar(total, description)` makes a progress bar (a context manager with `update`)."""

    def __init__(self, model, splits: dict, batch_size: int = 128, device=torch.device("cpu"), bar=None):
        self.model, self.splits, self.batch_size, self.device = model, splits, batch_size, device
        self.bar = bar or (lambda total, description: contextlib.nullcontext(_NoBar()))
        self._arrays = {}           # (split, node, kind) -> uint8 array

    def get(self, split: str, index: int, kind: str) -> np.ndarray:
        """Node `index` of a split as spike times ("times") or final maps ("final")."""
        key = (split, index, kind)
        if key in self._arrays:
            return self._arrays[key]
        if index == 0:
            source = self.splits[split].times
            array = source if kind == "times" else (np.asarray(source) < self.model.time_steps).astype(np.uint8)
        else:
            start, start_kind = 0, "times"
            for (s, i, k) in self._arrays:
                if s == split and i < index and i > start and (k == "times" or kind == "final"):
                    start, start_kind = i, k
            array = self._map(self.get(split, start, start_kind), start, start_kind, index, kind, split)
        self._arrays[key] = array
        return array

    def drop_after(self, index: int) -> None:
        """Forget the nodes after node `index` (a stage reading it has changed them)."""
        self._arrays = {k: v for k, v in self._arrays.items() if k[1] <= index}

    @torch.no_grad()
    def _map(self, source, start, start_kind, stop, kind, split):
        out = None
        self.model.start_evaluation(split)
        # node 0 goes to the model as encoded unless the model reads final maps of spike times
        as_final = start_kind == "times" and not (start == 0 and self.model.encoded_input)
        with self.bar(len(source), f"encode {split} node {stop}") as bar:
            for begin in range(0, len(source), self.batch_size):
                x = as_tensor(source[begin:begin + self.batch_size]).to(self.device)
                if kind == "times":
                    y = self.model.forward_times(x, start, stop)
                else:
                    x = st.final_map(x, self.model.time_steps) if as_final else x.float()
                    y = self.model.forward_final(x, start, stop)
                y = y.to(torch.uint8).cpu().numpy()
                if out is None:
                    out = np.empty((len(source),) + y.shape[1:], dtype=np.uint8)
                out[begin:begin + len(y)] = y
                bar.update(len(y))
        return out


class _NoBar:
    def update(self, count) -> None:
        pass


def as_tensor(array) -> torch.Tensor:
    """numpy (possibly a read-only memmap slice) -> tensor, copying only when needed."""
    array = np.asarray(array)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)
