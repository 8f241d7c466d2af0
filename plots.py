"""Figures (matplotlib, Agg): history, confusion matrix, activation maps, learned features.

Each function returns a Figure; the trainer saves it. Nothing here writes files.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
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
    columns = max(1, math.ceil(math.sqrt(count)))
    return math.ceil(count / columns), columns


def mosaic(tiles: np.ndarray, columns: int, gap: int = 1) -> np.ndarray:
    """Colour tiles [N, H, W, 4] (RGBA in [0, 1]) laid out row by row, `columns` to a row,
    `gap` white pixels between and around them: one image
    [rows * (H + gap) + gap, columns * (W + gap) + gap, 4], drawn with a single `imshow`
    (a subplot per tile costs matplotlib ~20 ms each: 250 features took seconds per figure)."""
    count, height, width = tiles.shape[:3]
    rows = math.ceil(count / columns) if count else 0
    image = np.ones((rows * (height + gap) + gap, columns * (width + gap) + gap, 4))
    for index in range(count):
        top = gap + (index // columns) * (height + gap)
        left = gap + (index % columns) * (width + gap)
        image[top:top + height, left:left + width] = tiles[index]
    return image


def _mosaic_figure(tiles: np.ndarray, title: str, inches: float):
    columns = _grid(len(tiles))[1]
    image = mosaic(tiles, columns)
    width = inches * columns
    height = width * image.shape[0] / image.shape[1]          # the mosaic's own aspect, 0.4" for the title
    figure = plt.figure(figsize=(width, height + 0.4))
    axis = figure.add_axes((0, 0, 1, height / (height + 0.4)))
    axis.set_axis_off()
    axis.imshow(image, interpolation="nearest")
    figure.suptitle(title, fontsize=9)
    return figure


def spike_time_figure(times: np.ndarray, time_steps: int, title: str, max_maps: int = 64):
    """First-spike times of one sample's maps [C, H, W] on one viridis scale (0 .. T - 1);
    white where the neuron never spikes (time >= T)."""
    maps = times[:max_maps]
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    scaled = np.ma.masked_greater_equal(maps, time_steps) / max(time_steps - 1, 1)
    shown = f" (first {max_maps} of {len(times)})" if len(times) > max_maps else ""
    return _mosaic_figure(cmap(scaled), f"{title}: first-spike time{shown}, dark = early, blank = never", 1.3)


def image_grid_figure(images: np.ndarray, title: str):
    """A grid of small images [N, H, W] (learned features), each on its own symmetric red
    (positive) / blue (negative) scale: value / max |value| of that image."""
    limits = np.abs(images).reshape(len(images), -1).max(axis=1) if len(images) else np.ones(0)
    limits = np.where(limits > 0, limits, 1.0).reshape(-1, 1, 1)
    return _mosaic_figure(plt.get_cmap("RdBu_r")((images / limits + 1) / 2), title, 1.0)


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


def comparison_figure(configurations: list[dict]):
    """`compare.configurations`, one colour each: test accuracy of every seed (dots), its mean
    (bar) and the linear readout beside the decision (x); the linear probe of each layer (mean
    over seeds), ending in the decision's and the readout's test accuracy; per-class F1;
    accuracy against training time and against inference speed."""
    count = len(configurations)
    colours = plt.get_cmap("tab10" if count <= 10 else "tab20")
    figure, axes = plt.subplots(2, 3, figsize=(20, 4 + 0.45 * max(count, 8)))
    bars, probes, classes, timing, speed, unused = axes.flatten()
    unused.axis("off")
    order = sorted(range(count), key=lambda i: configurations[i]["mean_test_accuracy"] or 0)
    for y, i in enumerate(order):
        group = configurations[i]
        if group["mean_test_accuracy"] is not None:
            bars.barh(y, group["mean_test_accuracy"], color=colours(i % colours.N), alpha=0.45)
        bars.scatter(group["test_accuracies"], [y] * len(group["test_accuracies"]), color=colours(i % colours.N),
                     zorder=3, s=18, label="decision, each seed" if y == 0 else None)
        bars.scatter(group["readout_accuracies"], [y] * len(group["readout_accuracies"]), marker="x",
                     color="black", zorder=3, label="linear readout beside it" if y == 0 else None)
    labels = [_short(configurations[i]["configuration"]) for i in order]
    bars.set_yticks(range(count), labels, fontsize=7)
    low = min([a for g in configurations for a in g["test_accuracies"] + g["readout_accuracies"]] or [0])
    bars.set_xlim(max(0.0, min(low, 0.9) - 0.02), 1.0)
    bars.set_xlabel("test accuracy")
    bars.set_title("test accuracy (bar: mean over seeds)")
    bars.grid(alpha=0.3, axis="x")
    bars.legend(fontsize=7, loc="lower right")
    for i, group in enumerate(configurations):
        layers = {k: v for k, v in group["probes"].items() if v is not None}
        if not layers:
            continue
        colour = colours(i % colours.N)
        probes.plot(range(len(layers)), list(layers.values()), marker="o", color=colour,
                    label=_short(group["configuration"]))
        for x, name in enumerate(layers):
            probes.annotate(name, (x, layers[name]), fontsize=6, xytext=(2, -8), textcoords="offset points")
        if group["mean_test_accuracy"] is not None:
            probes.scatter([len(layers)], [group["mean_test_accuracy"]], marker="*", s=80, color=colour)
        if group["readout_accuracies"]:
            probes.scatter([len(layers)], [np.mean(group["readout_accuracies"])], marker="x", s=50, color=colour)
    probes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    probes.set_xlabel("layer (forward order); then star: the decision's test accuracy, x: the readout's")
    probes.set_ylabel("linear probe accuracy (validation)")
    probes.set_title("class information reaching each layer (mean over seeds)")
    probes.grid(alpha=0.3)
    if probes.lines:
        probes.legend(fontsize=6, loc="lower left")
    names = sorted({c for g in configurations for c in g["per_class_f1"]}, key=lambda c: int(c) if c.isdigit() else c)
    if names:
        grid = np.array([[configurations[i]["per_class_f1"].get(c) or np.nan for c in names] for i in order[::-1]])
        image = classes.imshow(grid, aspect="auto", cmap="viridis", vmin=min(0.8, np.nanmin(grid)), vmax=1.0)
        classes.set_xticks(range(len(names)), names, fontsize=7)
        classes.set_yticks(range(count), labels[::-1], fontsize=7)
        figure.colorbar(image, ax=classes, fraction=0.04)
    classes.set_title("per-class F1 (test, mean over seeds)")
    for axis, key, label in ((timing, "mean_train_seconds", "training time (s)"),
                             (speed, "mean_inference_img_per_s", "inference (images/s)")):
        for i, group in enumerate(configurations):
            if group[key] is not None and group["mean_test_accuracy"] is not None:
                axis.scatter(group[key], group["mean_test_accuracy"], color=colours(i % colours.N), s=30)
                axis.annotate(group["model"], (group[key], group["mean_test_accuracy"]), fontsize=6,
                              xytext=(3, 3), textcoords="offset points")
        axis.set_xlabel(label)
        axis.set_ylabel("test accuracy (mean over seeds)")
        axis.grid(alpha=0.3)
    timing.set_title("accuracy against training time")
    speed.set_title("accuracy against inference speed")
    figure.tight_layout()
    return figure


def _short(label: str, limit: int = 48) -> str:
    return label if len(label) <= limit else label[:limit - 3] + "..."
