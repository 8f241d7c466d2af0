"""metrics.py against slow obvious definitions and scikit-learn, with silence counted as an error."""
import numpy as np
import pytest

import metrics


def slow_metrics(labels, predictions, num_classes):
    """Per-class precision / recall / F1 counted sample by sample (silence = -1 never predicts)."""
    out = {}
    for c in range(num_classes):
        tp = sum(1 for y, p in zip(labels, predictions) if y == c and p == c)
        predicted = sum(1 for p in predictions if p == c)
        actual = sum(1 for y in labels if y == c)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[c] = (precision, recall, f1, actual)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_equal_the_definitions(seed):
    rng = np.random.RandomState(seed)
    num_classes = 4
    labels = rng.randint(0, num_classes - (seed == 3), 60)          # seed 3: one class absent
    predictions = np.where(rng.rand(60) < 0.2, -1, np.where(rng.rand(60) < 0.5, labels,
                                                              rng.randint(0, num_classes, 60)))
    scores = rng.randn(60, num_classes)
    result = metrics.classification_metrics(labels, predictions, scores, num_classes)
    slow = slow_metrics(labels, predictions, num_classes)
    correct = int((predictions == labels).sum())
    silent = int((predictions < 0).sum())
    assert result["accuracy"] == correct / 60 and result["silence_rate"] == silent / 60
    assert result["error_rate"] == pytest.approx(1 - correct / 60 - silent / 60)
    for c in range(num_classes):
        row = result["per_class"][str(c)]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(slow[c])
    present = [c for c in range(num_classes) if slow[c][3]]
    assert result["macro_f1"] == pytest.approx(np.mean([slow[c][2] for c in present]))
    matrix = metrics.confusion_matrix(labels, predictions, num_classes)
    assert matrix.sum() == 60 and matrix[:, -1].sum() == silent
    assert all(matrix[y, p] >= 1 for y, p in zip(labels, predictions) if p >= 0)


def test_binary_auc_equals_scikit_learn_with_and_without_ties():
    from sklearn.metrics import roc_auc_score
    rng = np.random.RandomState(0)
    for trial in range(100):
        count = rng.randint(2, 500)
        positive = rng.rand(count) < 0.4
        positive[:2] = (True, False)
        scores = rng.randint(-3, 3, count).astype(float) if trial % 2 else rng.randn(count)
        assert metrics.binary_auc(positive, scores) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
    assert metrics.binary_auc(np.array([True, False]), np.array([1.0, 0.0])) == 1.0
    assert metrics.binary_auc(np.array([True, False]), np.array([0.5, 0.5])) == 0.5


def test_roc_auc_is_undefined_without_two_classes_or_with_nonfinite_scores():
    labels = np.zeros(5, dtype=np.int64)
    assert metrics.roc_auc(labels, np.random.randn(5, 3), 3) is None
    scores = np.random.randn(6, 2)
    scores[0, 0] = np.inf
    assert metrics.roc_auc(np.array([0, 1, 0, 1, 0, 1]), scores, 2) is None
    with pytest.raises(ValueError, match="no samples"):
        metrics.classification_metrics(np.zeros(0), np.zeros(0), None, 2)
