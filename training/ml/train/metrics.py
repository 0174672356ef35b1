"""Evaluation metrics for a K-class classifier, as JSON-ready dicts.

Definitions (``labels``: N true class indices; ``probs``: N x K probabilities):

* the predicted class is the argmax of ``probs``; ``confusion_matrix[i][j]`` counts images of true
  class i predicted as j (rows true, columns predicted);
* per class, one-vs-rest from that matrix: sensitivity (recall) = TP / (TP + FN), specificity =
  TN / (TN + FP), precision (PPV) = TP / (TP + FP), NPV = TN / (TN + FN), F1 = 2TP / (2TP + FP +
  FN), accuracy = (TP + TN) / N. A ratio whose denominator is 0 is ``None``, not 0;
* with ``thresholds``, each class also gets ``at_threshold``: the same figures for the triage
  rule "flag class c when p_c >= threshold_c", independent of the other classes;
* AUC is the one-vs-rest ROC AUC of ``probs[:, c]`` (``None`` when class c or its complement is
  absent); ``macro_auc`` averages the defined ones. For two classes both AUCs equal the binary AUC;
* balanced accuracy averages sensitivity over classes present in ``labels``; macro F1 averages F1
  over classes with a defined F1 (present or predicted);
* ECE: 15 equal-width bins on the top-class probability (see :mod:`.calibration`); Brier: mean over
  images of sum_c (p_c - y_c)^2 (0 best, 2 worst); log_loss: mean -ln p_true (clipped at 1e-15).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .calibration import _as_2d, _as_labels, expected_calibration_error

__all__ = ["binary_figures", "classification_report", "roc_curves"]

MAX_ROC_POINTS = 200


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def binary_figures(tp: int, fp: int, fn: int, tn: int) -> dict[str, Any]:
    """Sensitivity, specificity, precision, NPV, F1 and accuracy from one-vs-rest counts."""
    return {
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "tn": int(tn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
    }


def _check(labels: Any, probs: Any, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    p = _as_2d(probs, "probs")
    y = _as_labels(labels, len(p), p.shape[1])
    if len(classes) != p.shape[1]:
        raise ValueError(f"{len(classes)} class names for {p.shape[1]} probability columns.")
    if not len(y):
        raise ValueError("Cannot compute metrics on zero images.")
    if not np.isfinite(p).all():
        raise ValueError("probs hold NaN or infinite values: did training diverge?")
    return y, p


def _auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    if positive.all() or not positive.any():
        return None
    from sklearn.metrics import roc_auc_score  # here: importing the training loop needs no sklearn

    return float(roc_auc_score(positive, scores))


def classification_report(
    labels: Any,
    probs: Any,
    classes: Sequence[str],
    *,
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1/AUC, per-class figures, confusion matrix, ECE, Brier.

    See the module docstring for the exact definitions. Everything is a plain JSON type.
    """
    y, p = _check(labels, probs, classes)
    n, k = p.shape
    predicted = p.argmax(axis=1)
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(y, predicted, labels=list(range(k)))
    total = int(matrix.sum())

    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(classes):
        tp = int(matrix[c, c])
        fn = int(matrix[c].sum()) - tp
        fp = int(matrix[:, c].sum()) - tp
        tn = total - tp - fn - fp
        figures = binary_figures(tp, fp, fn, tn)
        figures["support"] = int(matrix[c].sum())
        figures["auc"] = _auc(y == c, p[:, c])
        if thresholds is not None and name in thresholds:
            threshold = float(thresholds[name])
            flagged = p[:, c] >= threshold
            positive = y == c
            figures["at_threshold"] = {
                "threshold": threshold,
                **binary_figures(
                    int((flagged & positive).sum()),
                    int((flagged & ~positive).sum()),
                    int((~flagged & positive).sum()),
                    int((~flagged & ~positive).sum()),
                ),
            }
        per_class[name] = figures

    recalls = [f["sensitivity"] for f in per_class.values() if f["sensitivity"] is not None]
    f1s = [f["f1"] for f in per_class.values() if f["f1"] is not None]
    aucs = [f["auc"] for f in per_class.values() if f["auc"] is not None]
    onehot = np.eye(k)[y]
    true_p = np.clip(p[np.arange(n), y], 1e-15, 1.0)
    return {
        "n": int(n),
        "classes": list(classes),
        "accuracy": float((predicted == y).mean()),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "per_class": per_class,
        "confusion_matrix": matrix.astype(int).tolist(),
        "ece": expected_calibration_error(p, y, n_bins=15),
        "brier": float(((p - onehot) ** 2).sum(axis=1).mean()),
        "log_loss": float(-np.log(true_p).mean()),
    }


def roc_curves(
    labels: Any, probs: Any, classes: Sequence[str], *, max_points: int = MAX_ROC_POINTS
) -> dict[str, dict[str, list[float]] | None]:
    """One-vs-rest ROC curve per class, ``{fpr, tpr, thresholds}`` lists of at most ``max_points``.

    ``None`` for a class whose ROC is undefined (no positives or no negatives). The first point is
    (0, 0); its threshold, +inf in scikit-learn, is given as 1.0 so the lists stay JSON.
    """
    y, p = _check(labels, probs, classes)
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points!r}.")
    from sklearn.metrics import roc_curve

    out: dict[str, dict[str, list[float]] | None] = {}
    for c, name in enumerate(classes):
        positive = y == c
        if positive.all() or not positive.any():
            out[name] = None
            continue
        fpr, tpr, thr = roc_curve(positive, p[:, c])
        thr = np.where(np.isfinite(thr), thr, 1.0)
        if len(fpr) > max_points:
            keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
            fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
        out[name] = {
            "fpr": [float(v) for v in fpr],
            "tpr": [float(v) for v in tpr],
            "thresholds": [float(v) for v in thr],
        }
    return out
