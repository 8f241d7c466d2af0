"""What a run writes into its folder: checkpoints, history, metrics, confusion matrix, learned
features, activation maps and TensorBoard events.

The rank-0 rule lives here: rank 0 of a data-parallel run (or the only process) gets
`RunOutputs`, every other rank `NoOutputs`, whose methods do nothing, so the trainer calls the
same methods on every rank and never asks which one it is. Files are written atomically
(`utils`), figures drawn by `plots`.
"""
from __future__ import annotations

import csv
import io
import time

import plots
from checkpoints import load_checkpoint, save_checkpoint
from utils import atomic_write_json, atomic_write_text, save_figure

# the history figure is redrawn at most this often during training (drawing costs ~0.4 s, more
# than a short epoch) and always at the end; history.csv is rewritten after every epoch
HISTORY_FIGURE_EVERY_S = 30.0


class RunOutputs:
    """The run folder `run` (a `run_folder.RunDirectory`) of the process that writes."""
    writes = True

    def __init__(self, run, tensorboard: bool = False):
        self.run, self.tensorboard, self.writer = run, tensorboard, None
        self._undrawn, self._drawn_at = None, float("-inf")

    @property
    def path(self) -> str:
        return self.run.path

    def open(self) -> None:
        if self.tensorboard and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(self.run.folder("tensorboard"))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ---- checkpoints
    def save_checkpoint(self, name: str, payload: dict) -> None:
        save_checkpoint(self.run.file("checkpoints", name), payload)

    def load_checkpoint(self, name: str) -> dict:
        return load_checkpoint(self.run.file("checkpoints", name))

    # ---- during training
    def epoch(self, rows: list[dict]) -> None:
        """After an epoch: the whole history (csv; the figure at most every
        HISTORY_FIGURE_EVERY_S seconds, and at the end) and the new row's scalars."""
        keys = list(dict.fromkeys(k for r in rows for k in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.run.file("history.csv"), buffer.getvalue())
        self._undrawn = list(rows)
        if time.monotonic() - self._drawn_at >= HISTORY_FIGURE_EVERY_S:
            self.draw_history()
        if self.writer is not None:
            row = rows[-1]
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(f"{row['stage']}/{key}", value, len(rows))

    def draw_history(self, rows: list[dict] | None = None) -> None:
        """history.png from `rows` (default: the rows of the last `epoch` call, unless drawn)."""
        rows = self._undrawn if rows is None else rows
        if rows:
            save_figure(plots.history_figure(rows), self.run.file("history.png"))
            self._undrawn, self._drawn_at = None, time.monotonic()

    # ---- at the end
    def test(self, metrics: dict, matrix, classes: list[str]) -> None:
        """metrics.json, the confusion matrix (csv and figure), the layer diagnostics' figure
        (layers.png) and the test and layer scalars."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["true \\ predicted"] + list(classes) + ["silent"])
        for name, row in zip(classes, matrix):
            writer.writerow([name] + [int(v) for v in row])
        atomic_write_text(self.run.file("confusion_matrix.csv"), buffer.getvalue())
        save_figure(plots.confusion_figure(matrix, classes), self.run.file("confusion_matrix.png"))
        layers = metrics.get("layers") or {}
        if layers:
            save_figure(plots.layers_figure(layers, metrics["accuracy"]), self.run.file("layers.png"))
        atomic_write_json(self.run.file("metrics.json"), metrics)
        if self.writer is not None:
            self.writer.add_figure("test/confusion_matrix", plots.confusion_figure(matrix, classes))
            for key in ("accuracy", "silence_rate", "macro_f1"):
                self.writer.add_scalar(f"test/{key}", metrics[key])
            for name, values in layers.items():
                for key, value in values.items():
                    self.writer.add_scalar(f"layers/{name}/{key}", value)

    def features(self, images: dict) -> None:
        """Learned features as image grids, one figure per layer ({layer: [N, h, w]})."""
        for name, features in images.items():
            features = features[:100]
            save_figure(plots.image_grid_figure(features, f"{name}: learned features (first {len(features)})"),
                        self.run.file("features", f"{name}.png"))

    def activation_maps(self, sample: int, traces: dict, time_steps: int) -> None:
        """One test sample's per-layer activity: spike-time maps [C, H, W], single-neuron traces
        (names ending in "trace") or neuron x time heat maps."""
        for name, trace in traces.items():
            title = f"test {sample} {name}"
            if trace.ndim == 3:
                figure = plots.spike_time_figure(trace, time_steps, title)
            elif name.endswith("trace"):
                figure = plots.trace_figure(trace, title)
            else:
                figure = plots.heatmap_figure(trace, title)
            save_figure(figure, self.run.file("activation_maps", f"sample{sample}-{name}.png"))


class NoOutputs:
    """The outputs of a rank that does not write: every method does nothing."""
    writes = False
    path = None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None
