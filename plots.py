"""Figures (matplotlib, Agg): history, confusion matrix, activation maps, learned features.

Each function returns a Figure; the trainer saves it. Nothing here writes files.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def history_figure(rows: list[dict]):
    """Per epoch: supervised train hit/miss/silence and validation accuracy; learning rates."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    supervised = [r for r in rows if "train_hit" in r]
    if supervised:
        x = np.arange(1, len(supervised) + 1)
        for key, label in (("train_hit", "train correct"), ("train_miss", "train wrong"),
                           ("train_silence", "train silent"), ("val_accuracy", "validation accuracy")):
            left.plot(x, [r.get(key, np.nan) for r in supervised], marker=".", label=label)
        left.set_xlabel("supervised epoch")
        left.set_ylabel("fraction of samples")
        left.set_ylim(0, 1)
        left.legend(loc="center right")
        left.grid(alpha=0.3)
    else:
        left.text(0.5, 0.5, "no supervised epoch yet", ha="center", va="center")
        left.set_axis_off()
    x = np.arange(1, len(rows) + 1)
    keys = sorted({k for r in rows for k in r if k.startswith("rate_")})
    for key in keys:
        right.plot(x, [abs(r.get(key, np.nan)) for r in rows], marker=".", label=key[5:])
    right.set_yscale("log")
    right.set_xlabel("epoch (all stages)")
    right.set_ylabel("|learning rate| (end of epoch)")
    if keys:
        right.legend(fontsize=7)
    right.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def confusion_figure(matrix: np.ndarray, classes: list[str]):
    """Rows true class, columns predicted class plus "silent"."""
    count = len(classes)
    figure, axis = plt.subplots(figsize=(1.0 + 0.55 * (count + 1), 0.8 + 0.5 * count))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046)
    axis.set_xticks(range(count + 1), list(classes) + ["silent"], rotation=45, ha="right")
    axis.set_yticks(range(count), classes)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    limit = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        axis.text(j, i, str(value), ha="center", va="center", fontsize=7,
                  color="white" if value > limit else "black")
    axis.set_title("confusion matrix (test)")
    figure.tight_layout()
    return figure


def _grid(count: int) -> tuple[int, int]:
    columns = math.ceil(math.sqrt(count))
    return math.ceil(count / columns), columns


def spike_time_figure(times: np.ndarray, time_steps: int, title: str, max_maps: int = 64):
    """First-spike times of one sample's maps [C, H, W]; blank where the neuron never spikes."""
    maps = times[:max_maps]
    rows, columns = _grid(len(maps))
    figure, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.3 * rows + 0.4),
                                squeeze=False)
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index < len(maps):
            axis.imshow(np.ma.masked_greater_equal(maps[index], time_steps), cmap=cmap,
                        vmin=0, vmax=time_steps - 1)
    shown = f" (first {max_maps} of {len(times)})" if len(times) > max_maps else ""
    figure.suptitle(f"{title}: first-spike time{shown}, dark = early, blank = never", fontsize=9)
    return figure


def image_grid_figure(images: np.ndarray, title: str):
    """A grid of small images [N, H, W] (learned features), each on a symmetric red (positive) /
    blue (negative) scale."""
    rows, columns = _grid(len(images))
    figure, axes = plt.subplots(rows, columns, figsize=(1.0 * columns, 1.0 * rows + 0.4),
                                squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index < len(images):
            limit = float(np.abs(images[index]).max()) or 1.0
            axis.imshow(images[index], cmap="RdBu_r", vmin=-limit, vmax=limit)
    figure.suptitle(title, fontsize=9)
    return figure


def heatmap_figure(values: np.ndarray, title: str):
    """Neurons x time activity of one sample (rows: neurons, columns: time steps)."""
    rows, columns = values.shape
    figure, axis = plt.subplots(figsize=(min(16, 4 + columns / 12), min(12, 2 + rows / 10)))
    image = axis.imshow(values, aspect="auto", interpolation="nearest", cmap="rainbow")
    figure.colorbar(image, ax=axis)
    axis.set_xlabel("time step")
    axis.set_ylabel("neuron")
    axis.set_title(title)
    figure.tight_layout()
    return figure


def trace_figure(values: np.ndarray, title: str, labels=("state", "output")):
    """Line plots over time of one neuron's signals (rows of `values`)."""
    figure, axis = plt.subplots(figsize=(10, 3.5))
    for index, row in enumerate(np.atleast_2d(values)):
        axis.plot(row, label=labels[index] if index < len(labels) else str(index))
    axis.set_xlabel("time step")
    axis.set_ylabel("activation")
    axis.legend()
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def layers_figure(layers: dict, accuracy: float | None = None):
    """Layer diagnostics (`diagnostics.layer_diagnostics`), one group of bars per layer: linear
    probe accuracy (validation), fraction of active outputs, features that never fire, and, for
    STDP layers, features that never win and the evenness of the winners; a line at the test
    accuracy of the run's own decision."""
    names = [name for name in layers if name != "decision"]
    keys = [("probe_accuracy", "probe accuracy (val)"), ("active", "active outputs"),
            ("silent_features", "features never firing"), ("never_win", "features never winning"),
            ("winner_evenness", "winner evenness")]

    def value(name, key):
        found = [v for k, v in layers[name].items() if k == key or k.endswith("." + key)]
        return float(np.mean(found)) if found else np.nan

    figure, axis = plt.subplots(figsize=(2.0 + 1.4 * max(1, len(names)), 4))
    width = 0.8 / len(keys)
    x = np.arange(len(names))
    for i, (key, label) in enumerate(keys):
        axis.bar(x + i * width, [value(n, key) for n in names], width, label=label)
    if accuracy is not None:
        axis.axhline(accuracy, color="black", linestyle="--", linewidth=1, label="test accuracy (decision)")
    axis.set_xticks(x + 0.4 - width / 2, names)
    axis.set_ylim(0, 1.05)
    axis.set_title("what each layer passes on")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    return figure
