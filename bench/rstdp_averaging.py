"""Would averaging the R-STDP decision weights help? (An experiment, not a feature.)

R-STDP with one winner per sample is a perceptron-like rule: reward pulls the winner's kernel
towards the input, punishment pushes it away. For the perceptron, the average of the weights
over training (Freund & Schapire's averaged perceptron) generalises better than the last
iterate. This runs `train.py` unchanged (same weights, same curve as the run it repeats) and,
at every adaptive-rate window (about 1,000 samples, independent of the batch size), adds the
decision layer's kernels to running sums; after each epoch it also scores on the validation
split the kernels averaged over

- `all`: every window of the stage so far;
- `epoch`: the windows of this epoch;
- `tail`: the windows of the second half of the epochs so far;
- `ema`: an exponential average over windows with decay 0.98 (a horizon of about an epoch).

Rows go to `averaging.csv` in the run folder (epoch, variant, val_accuracy); the test split is
never touched for the variants. Example (conv layers from a finished run, the decision trained
again from its seeded start, 60 epochs at most):

    python bench/rstdp_averaging.py --init-from runs/zoo-full5/mozafari2018-seed0 --epochs 0 0 60 \\
        --dataset mnist --data-root ../shared/data --seed 0 --threads 1 --out-dir runs/avg
"""
import csv
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import network_trainer  # noqa: E402
import train  # noqa: E402
from models.stages import RSTDPStage  # noqa: E402

EMA_DECAY = 0.98


class Averages:
    """Running sums of the decision kernels, per window."""

    def __init__(self):
        self.total = None          # sum over all windows
        self.epoch_sums = []       # per epoch: (sum, windows)
        self.ema = None

    def add(self, weight: torch.Tensor) -> None:
        w = weight.detach().double()
        self.total = w.clone() if self.total is None else self.total + w
        self.ema = w.clone() if self.ema is None else EMA_DECAY * self.ema + (1 - EMA_DECAY) * w
        current, count = self.epoch_sums[-1]
        self.epoch_sums[-1] = (w.clone() if current is None else current + w, count + 1)

    def variants(self) -> dict:
        windows = sum(c for _, c in self.epoch_sums)
        half = len(self.epoch_sums) // 2
        tail = self.epoch_sums[half:]
        current, count = self.epoch_sums[-1]
        return {"all": self.total / windows, "epoch": current / count,
                "tail": sum(s for s, _ in tail) / sum(c for _, c in tail), "ema": self.ema}


AVERAGES = Averages()
_adapt, _start, _validate = RSTDPStage._adapt, RSTDPStage.start_epoch, network_trainer.NetworkTrainer._validate


def _kernel(stage) -> torch.Tensor:
    return stage.head.conv.weight


def adapt(self) -> None:
    _adapt(self)
    AVERAGES.add(_kernel(self))


def start_epoch(self, size: int = 0, epoch: int = 0) -> None:
    _start(self, size, epoch)
    AVERAGES.epoch_sums.append((None, 0))


def validate(self, stage, row) -> bool:
    stop = _validate(self, stage, row)
    kernel = _kernel(stage)
    kept = kernel.detach().clone()
    path = os.path.join(self.outputs.run.path, "averaging.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["epoch", "variant", "val_accuracy"])
        writer.writerow([row["epoch"], "last", f"{row['val_accuracy']:.6f}"])
        for name, average in AVERAGES.variants().items():
            kernel.copy_(average.to(kernel.dtype))
            labels, predictions, _ = self.evaluate("val", stage.input_node, stage.needs)
            writer.writerow([row["epoch"], name, f"{float(np.mean(predictions == labels)):.6f}"])
        kernel.copy_(kept)
    return stop


RSTDPStage._adapt, RSTDPStage.start_epoch = adapt, start_epoch
network_trainer.NetworkTrainer._validate = validate

if __name__ == "__main__":
    train.main(sys.argv[1:])
