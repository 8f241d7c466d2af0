"""Linear readouts: a scikit-learn linear classifier on the final spike features of the STDP
layers, in place of the R-STDP decision layer (Kheradpisheh et al. 2018's recipe).

The features of a sample are read from the decision layer's input, [C * H * W] per sample, in
one of two forms (`values`):

- "spiked" (the papers'): 1 where a neuron spiked at all (its final map), else 0;
- "latency": T - t for a first spike at step t (T for a spike at step 0, 1 at the last step),
  0 for none. The classifier is fitted on these values / T (in (0, 1], so C means about what it
  means for "spiked"), and the fitted coefficients are stored divided by T, so a prediction is
  `coef . (T - t) + intercept` on the integer values.

A sample without any feature spike is silent (class -1, counted as an error, as for R-STDP).
The fitted classifier is kept as tensors (`coef`, `intercept`), so checkpoints stay plain data;
its class scores are the decision function (`svm`) or the softmax probabilities (`logistic`),
used for ROC AUC.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .decision import Prediction
from .stages import StageBase

READOUTS = ("rstdp", "svm", "logistic")
VALUES = ("spiked", "latency")


@dataclass(frozen=True)
class ReadoutChoice:
    """A run's decision (`--readout KIND --readout-c C --readout-values V`): "rstdp", "svm" or
    "logistic" (None: the model's own, with the given C), the readout's C (None: chosen on the
    validation split, or the model's own) and the values it reads (None: "spiked")."""
    kind: str | None = None
    C: float | None = None
    values: str | None = None
C_GRID = (0.01, 0.1, 1.0, 10.0)        # decades tried first; see `search_C`
C_LIMITS = (1e-5, 1e4)


class LinearReadout(nn.Module):
    """A linear classifier on the flattened final spike maps ("spiked") or first-spike
    latencies ("latency", which needs `time_steps`) of its input node (module docstring)."""

    def __init__(self, kind: str, num_classes: int, C=None, values: str = "spiked",
                 time_steps: int | None = None):
        super().__init__()
        if kind not in ("svm", "logistic"):
            raise ValueError(f"readout must be 'svm' or 'logistic', got {kind!r}")
        if values not in VALUES:
            raise ValueError(f"readout values must be one of {', '.join(VALUES)}, got {values!r}")
        if values == "latency" and not time_steps:
            raise ValueError("a latency readout needs the number of time steps")
        self.kind, self.num_classes, self.C, self.values = kind, num_classes, C, values
        self.time_steps = time_steps
        self.needs = "times" if values == "latency" else "final"      # the form of its input node
        # the feature size depends on the image size: the weights take their shape when fitted
        # (or loaded); before that every sample scores 0
        self.register_buffer("coef", torch.zeros(num_classes, 0))
        self.register_buffer("intercept", torch.zeros(num_classes))
        self.register_buffer("fitted_C", torch.zeros(()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        coef = state_dict.get(prefix + "coef")
        if coef is not None and coef.shape != self.coef.shape:
            self.coef = torch.zeros_like(coef, device=self.coef.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def features(self, node: torch.Tensor) -> torch.Tensor:
        """[B, D] float from the input node [B, ...]: its final map ("spiked"), or T - t for its
        spike times t ("latency", 0 where t = T: no spike)."""
        if self.values == "latency":
            return (self.time_steps - node.float()).clamp(min=0).flatten(1)
        return node.flatten(1).float()

    @property
    def scale(self) -> float:
        """What the classifier multiplies the stored values by while it is fitted."""
        return 1.0 / self.time_steps if self.values == "latency" else 1.0

    @torch.no_grad()
    def features_of(self, inputs, batch_size: int = 256, device=None) -> np.ndarray:
        """`features` of input nodes `inputs` [N, ...] (numpy or tensor), in batches, as uint8 [N, D]."""
        device = self.intercept.device if device is None else device
        parts = [self.features(torch.as_tensor(np.asarray(inputs[b:b + batch_size])).to(device).float())
                 .to(torch.uint8).cpu().numpy() for b in range(0, len(inputs), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.uint8)

    def predict(self, node: torch.Tensor) -> Prediction:
        """Decisions from the input node [B, ...] (a final map, or spike times for "latency")."""
        features = self.features(node)
        if self.coef.shape[1] != features.shape[1]:
            if self.coef.shape[1]:
                raise ValueError(f"the readout was fitted on {self.coef.shape[1]} features, got {features.shape[1]}")
            self.coef = torch.zeros(self.num_classes, features.shape[1], device=features.device)
        scores = F.linear(features, self.coef, self.intercept)
        classes = scores.argmax(dim=1)
        classes = torch.where(features.amax(dim=1) > 0, classes, -1)        # no spike: silence
        if self.kind == "logistic":
            scores = scores.softmax(dim=1)
        return Prediction(classes, scores, torch.full((len(classes), 1, 3), -1, device=classes.device))

    def fit(self, train: np.ndarray, train_labels: np.ndarray, val: np.ndarray, val_labels: np.ndarray,
            seed: int = 0) -> dict:
        """Fit on the non-silent training samples; with `C` unset, pick it on the validation
        split with `search_C` (silent validation samples count as errors). Returns a summary."""
        from scipy import sparse
        spiking = train.sum(axis=1) > 0
        x, y = train[spiking], train_labels[spiking]
        if len(np.unique(y)) < 2:
            raise ValueError(f"the readout needs spiking training samples of at least 2 classes, got "
                             f"{len(np.unique(y))} ({int(spiking.sum())} spiking of {len(train)})")
        # constant features carry no information and only slow the solver down
        informative = np.flatnonzero(x.max(axis=0) != x.min(axis=0))
        x = sparse.csr_matrix(x[:, informative]) if informative.size else None
        if x is not None and self.scale != 1.0:
            x = x.astype(np.float64) * self.scale

        def evaluate(C):
            coef, intercept = _fit(self.kind, C, seed, x, y, informative, train.shape[1], self.num_classes)
            coef *= self.scale              # so that it scores the stored (unscaled) values
            return float((self._classes(val, coef, intercept) == val_labels).mean()), coef, intercept

        fits = {self.C: evaluate(self.C)} if self.C is not None else search_C(evaluate)
        C = max(fits, key=lambda c: (fits[c][0], -c))
        accuracy, coef, intercept = fits[C]
        self.coef = torch.from_numpy(coef).to(self.intercept.device)
        self.intercept.copy_(torch.from_numpy(intercept))
        self.fitted_C.fill_(C)
        return {"val_accuracy": accuracy, "C": C, "silent_train": float(1 - spiking.mean())}

    @staticmethod
    def _classes(features, coef, intercept):
        classes = (features @ coef.T + intercept).argmax(axis=1)
        return np.where(features.sum(axis=1) > 0, classes, -1)

    # the head interface the trainer and the model use
    def stdp_layers(self) -> list:
        return []

    def macs(self, shape) -> int:
        return int(np.prod(shape)) * self.num_classes

    def output_shape(self, shape):
        return (self.num_classes, 1, 1)


def search_C(evaluate) -> dict:
    """{C: evaluate(C)} (evaluate returns a tuple led by the validation accuracy) over: the
    decades of `C_GRID`; then further decades past an edge while the edge beats its neighbour
    (a best C at the end of the grid says the optimum lies beyond it), within `C_LIMITS`; then
    the two half-decade neighbours of the best. Ties go to the smaller C (stronger
    regularisation)."""
    fits = {}

    def best():
        return max(fits, key=lambda c: (fits[c][0], -c))

    def score(C):
        C = float(f"{C:.3g}")
        if C not in fits:
            fits[C] = evaluate(C)

    for C in C_GRID:
        score(C)
    while True:
        top, grid = best(), sorted(fits)
        if top == grid[0] and fits[grid[0]][0] > fits[grid[1]][0] and grid[0] / 10 >= C_LIMITS[0]:
            score(grid[0] / 10)
        elif top == grid[-1] and fits[grid[-1]][0] > fits[grid[-2]][0] and grid[-1] * 10 <= C_LIMITS[1]:
            score(grid[-1] * 10)
        else:
            break
    top = best()
    for C in (top / 10 ** 0.5, top * 10 ** 0.5):
        if C_LIMITS[0] <= C <= C_LIMITS[1]:
            score(C)
    return fits


def _fit(kind, C, seed, x, y, informative, size, num_classes):
    """(coef [classes, size], intercept [classes]) of a linear classifier on the informative
    columns; with none, an intercept-only classifier (the training majority)."""
    if x is None:
        counts = np.bincount(y, minlength=num_classes).astype(np.float32)
        return np.zeros((num_classes, size), np.float32), np.log(counts + 1e-12).astype(np.float32)
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC
    if kind == "svm":
        classifier = LinearSVC(C=C, random_state=seed, dual="auto", max_iter=2000)
    else:
        classifier = LogisticRegression(C=C, max_iter=1000, random_state=seed)
    with warnings.catch_warnings():      # a capped solver is reported by the validation accuracy
        warnings.simplefilter("ignore")
        classifier.fit(x, y)
    partial, intercept = _linear(classifier, num_classes)
    coef = np.zeros((num_classes, size), np.float32)
    coef[:, informative] = partial
    return coef, intercept


def _linear(classifier, num_classes: int):
    """(coef [classes, D], intercept [classes]) float32, for every class even if absent in training."""
    coef = np.full((num_classes, classifier.coef_.shape[1]), -1e9, dtype=np.float32)
    intercept = np.full(num_classes, -1e9, dtype=np.float32)
    classes = classifier.classes_
    if len(classes) == 2 and classifier.coef_.shape[0] == 1:     # binary: one decision function
        coef[classes[1]], intercept[classes[1]] = classifier.coef_[0], classifier.intercept_[0]
        coef[classes[0]], intercept[classes[0]] = -classifier.coef_[0], -classifier.intercept_[0]
    else:
        coef[classes], intercept[classes] = classifier.coef_, classifier.intercept_
    coef[np.isin(np.arange(num_classes), classes, invert=True)] = 0.0
    return coef, intercept


class ReadoutStage(StageBase):
    """Fit a linear readout in closed form: one epoch whose steps gather the training split's
    features (in the split's order) and whose end fits them, with C chosen on the validation
    split (`LinearReadout.fit`). It reads its node as the readout needs it."""
    kind = "readout"
    supervised = True
    data_parallel = True        # deterministic: every rank fits the same readout on all the data
    replicated = True
    sample_order = "natural"

    def __init__(self, name: str, head: LinearReadout, input_node: int):
        self.name, self.head, self.input_node = name, head, input_node
        self.needs = head.needs
        self._features, self._labels = [], []

    def epochs(self, requested: int) -> int:
        return 1                # a closed-form fit: once, whatever the run asks

    def trained_modules(self) -> list:
        return [self.head]

    def start_epoch(self, size: int = 0, epoch: int = 0) -> None:
        self._features, self._labels = [], []

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict:
        self._features.append(self.head.features(inputs).to(torch.uint8).cpu().numpy())
        self._labels.append(labels.cpu().numpy())
        return {}

    @torch.no_grad()
    def end_epoch(self, validation=None) -> dict:
        """Fit on the gathered features; `validation()` gives the validation node and labels."""
        inputs, labels = validation()
        features = self.head.features_of(inputs)
        train = np.concatenate(self._features)
        train_labels = np.concatenate(self._labels)
        self._features, self._labels = [], []
        return self.head.fit(train, train_labels, features, np.asarray(labels), seed=self.seed)
