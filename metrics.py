"""Classification metrics with silence (-1) counted as an error, and the training diagnostics
of an epoch's history row (pure functions)."""
from __future__ import annotations


import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class, then one "silent" column.

    Shape: [num_classes, num_classes + 1] int64.
    """
    matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    columns = np.where(predictions < 0, num_classes, predictions)
    np.add.at(matrix, (labels, columns), 1)
    return matrix


def classification_metrics(labels, predictions, scores, num_classes: int) -> dict:
    """Accuracy, error and silence rates, per-class and macro precision / recall / F1, and
    one-vs-rest ROC AUC from the class scores (largest final potential of each class).

    Silent samples count as errors for accuracy and recall; they predict no class, so they add
    to no class's precision denominator.
    """
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    count = len(labels)
    if count == 0:
        raise ValueError("no samples to evaluate")
    matrix = confusion_matrix(labels, predictions, num_classes)
    true_positive = np.diag(matrix[:, :num_classes]).astype(np.float64)
    predicted = matrix[:, :num_classes].sum(axis=0).astype(np.float64)
    actual = matrix.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, true_positive / predicted, 0.0)
        recall = np.where(actual > 0, true_positive / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = actual > 0
    correct = int(true_positive.sum())
    silent = int((predictions < 0).sum())
    result = {
        "samples": count,
        "accuracy": correct / count,
        "error_rate": (count - correct - silent) / count,
        "silence_rate": silent / count,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {str(c): {"precision": float(precision[c]), "recall": float(recall[c]),
                               "f1": float(f1[c]), "support": int(actual[c])}
                      for c in range(num_classes)},
        "roc_auc_ovr": roc_auc(labels, scores, num_classes),
    }
    return result


def roc_auc(labels: np.ndarray, scores, num_classes: int):
    """Macro one-vs-rest ROC AUC over the classes present (None when undefined)."""
    if scores is None:
        return None
    scores = np.asarray(scores, dtype=np.float64)
    present = [c for c in range(num_classes) if 0 < (labels == c).sum() < len(labels)]
    if not present or not np.isfinite(scores).all():
        return None
    return float(np.mean([binary_auc(labels == c, scores[:, c]) for c in present]))


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the boolean `positive`: the probability that a
    random positive outscores a random negative, ties counting one half (the Mann-Whitney U
    statistic from mid-ranks; equals scikit-learn's `roc_auc_score` up to float rounding, and
    spares every run the second it takes to import scikit-learn).

    Shape: positive [N] bool (both classes present), scores [N] -> a float in [0, 1].
    """
    positive = np.asarray(positive, dtype=bool)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # mid-rank of each distinct score (1-based): the ranks below it plus the mean of its own
    mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = mid_ranks[inverse]
    count_pos = int(positive.sum())
    count_neg = positive.size - count_pos
    u = ranks[positive].sum() - count_pos * (count_pos + 1) / 2.0
    return float(u / (count_pos * count_neg))


SATURATED, SILENT = 0.95, 0.01      # output spike rates flagged while training
COLLAPSED = 0.5                     # share of the training decisions taken by one class


def diagnose(stage: str, row: dict, num_classes: int) -> list[str]:
    """One-line warnings about an epoch's history row: a layer whose output nearly always or
    nearly never spikes (the next layer then sees little information), and a decision layer
    whose training decisions collapse onto one class."""
    warnings = []
    rate = row.get("spike_rate")
    if rate is not None and rate >= SATURATED:
        warnings.append(f"{stage} is saturated: {rate:.0%} of its output neurons spike on validation images")
    elif rate is not None and rate <= SILENT:
        warnings.append(f"{stage} is nearly silent: {rate:.1%} of its output neurons spike on validation images")
    share = row.get("top_class_share")
    if share is not None and num_classes > 2 and share >= COLLAPSED:
        warnings.append(f"{stage} is collapsing: one class took {share:.0%} of this epoch's training "
                        f"decisions ({num_classes} classes)")
    return warnings
