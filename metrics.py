"""Classification metrics with silence (-1) counted as an error (pure functions)."""
from __future__ import annotations

import warnings

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
    from sklearn.metrics import roc_auc_score
    scores = np.asarray(scores, dtype=np.float64)
    present = [c for c in range(num_classes) if 0 < (labels == c).sum() < len(labels)]
    if not present or not np.isfinite(scores).all():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = [roc_auc_score(labels == c, scores[:, c]) for c in present]
    return float(np.mean(values))
