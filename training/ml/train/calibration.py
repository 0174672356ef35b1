"""Calibration: temperature scaling, expected calibration error, and per-class operating thresholds.

All functions take numpy arrays (or lists): ``logits``/``probs`` are N x K, ``labels`` N class
indices. Thresholds follow one rule everywhere: class ``c`` is flagged when ``p_c >= threshold``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "THRESHOLD_STRATEGIES",
    "choose_thresholds",
    "expected_calibration_error",
    "fit_temperature",
    "nll",
    "reliability_bins",
    "softmax",
]

logger = logging.getLogger(__name__)

THRESHOLD_STRATEGIES = ("sensitivity", "youden")

#: The range fit_temperature searches. Below ~0.1 temperature scaling only sharpens a model that
#: separated a (small) validation set perfectly: overconfidence, not calibration.
TEMPERATURE_BOUNDS = (0.1, 10.0)

#: Used for a class with no positive (or no negative) example in the split.
FALLBACK_THRESHOLD = 0.5


def _as_2d(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(f"{name} must be an N x K array with K >= 2 classes, got {array.shape}.")
    return array


def _as_labels(labels: Any, n: int, k: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1 or len(array) != n:
        raise ValueError(f"labels must be {n} class indices, got shape {array.shape}.")
    if n and (not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() >= k):
        raise ValueError(f"labels must be integers from 0 to {k - 1}.")
    return array.astype(np.int64)


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float64."""
    z = _as_2d(logits, "logits") / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)`` (natural log)."""
    z = _as_2d(logits, "logits")
    y = _as_labels(labels, len(z), z.shape[1])
    if not len(y):
        return float("nan")
    from scipy.special import log_softmax  # here: importing the training loop needs no scipy

    logp = log_softmax(z / float(temperature), axis=1)
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(
    logits: Any,
    labels: Any,
    *,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)`` on (validation) data.

    A bounded Brent search over ``log T`` (the NLL is convex in 1/T, so the search finds the global
    minimum in ``bounds``). Returns 1.0 when the data cannot tell: no samples, non-finite logits,
    scaling does not lower the NLL, or every image is already classified correctly (then the NLL
    falls forever as T -> 0, and sharpening would only make the model overconfident). Never
    changes which class is the argmax.
    """
    z = _as_2d(logits, "logits")
    y = _as_labels(labels, len(z), z.shape[1])
    if not len(y) or not np.isfinite(z).all():
        return 1.0
    low, high = bounds
    if not 0 < low < 1 < high:
        raise ValueError(f"bounds must satisfy 0 < low < 1 < high, got {bounds!r}.")
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(
        lambda log_t: nll(z, y, math.exp(log_t)),
        bounds=(math.log(low), math.log(high)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    temperature = float(math.exp(result.x))
    before, after = nll(z, y, 1.0), nll(z, y, temperature)
    if not (math.isfinite(after) and after < before - 1e-9):
        return 1.0
    if temperature < 1.0 and bool((z.argmax(axis=1) == y).all()):
        # Every image is classified correctly: the NLL keeps falling as T -> 0, so the data
        # cannot tell how sharp the model should be. Sharpening on such evidence (typically a
        # small validation split) would make the model overconfident; keep it as it is.
        logger.warning(
            "fit_temperature: all %d validation images are classified correctly, so the "
            "temperature is not identifiable; keeping T = 1.0",
            len(y),
        )
        return 1.0
    return temperature


def _confidence_correct(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _as_2d(probs, "probs")
    y = _as_labels(labels, len(p), p.shape[1])
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    # Bins (lo, hi], the first one [0, 1/n]: ceil(c * n) - 1, clipped.
    return np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """ECE on the top-class confidence: sum over equal-width bins of |accuracy - confidence|
    weighted by the bin's share of samples. 0 is perfect; NaN for no samples."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins!r}.")
    confidence, correct = _confidence_correct(probs, labels)
    if not len(confidence):
        return float("nan")
    bins = _bin_index(confidence, n_bins)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def reliability_bins(probs: Any, labels: Any, n_bins: int = 15) -> list[dict[str, Any]]:
    """Per-bin ``{bin_lower, bin_upper, confidence, accuracy, count}`` for a reliability diagram.

    Every bin is listed; an empty bin has count 0 and ``None`` confidence and accuracy.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins!r}.")
    confidence, correct = _confidence_correct(probs, labels)
    bins = _bin_index(confidence, n_bins)
    out = []
    for b in range(n_bins):
        mask = bins == b
        count = int(mask.sum())
        out.append(
            {
                "bin_lower": b / n_bins,
                "bin_upper": (b + 1) / n_bins,
                "confidence": float(confidence[mask].mean()) if count else None,
                "accuracy": float(correct[mask].mean()) if count else None,
                "count": count,
            }
        )
    return out


def choose_thresholds(
    labels: Any,
    probs: Any,
    classes: Sequence[str],
    *,
    target_sensitivity: float = 0.9,
    strategy: str = "sensitivity",
) -> dict[str, float]:
    """A per-class operating threshold, one-vs-rest, chosen on the given (validation) split.

    ``strategy="sensitivity"``: the highest threshold at which at least ``target_sensitivity`` of
    the class's images have ``p_c >= threshold`` (the most specific operating point that still
    meets the sensitivity target on this split). ``strategy="youden"``: the threshold maximising
    sensitivity + specificity - 1. A class without positives (or, for Youden, without negatives)
    in the split gets :data:`FALLBACK_THRESHOLD`, with a warning in the log.
    """
    p = _as_2d(probs, "probs")
    y = _as_labels(labels, len(p), p.shape[1])
    if len(classes) != p.shape[1]:
        raise ValueError(f"{len(classes)} class names for {p.shape[1]} probability columns.")
    if strategy not in THRESHOLD_STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; choose one of {THRESHOLD_STRATEGIES}.")
    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity!r}.")

    thresholds: dict[str, float] = {}
    for c, name in enumerate(classes):
        scores = p[:, c]
        positive = y == c
        if not positive.any() or (strategy == "youden" and positive.all()):
            logger.warning(
                "class %r has no %s in this split; threshold %.2f used",
                name,
                "positives" if not positive.any() else "negatives",
                FALLBACK_THRESHOLD,
            )
            thresholds[name] = FALLBACK_THRESHOLD
        elif strategy == "sensitivity":
            thresholds[name] = _sensitivity_threshold(scores[positive], target_sensitivity)
        else:
            thresholds[name] = _youden_threshold(positive, scores)
    return thresholds


def _sensitivity_threshold(positive_scores: np.ndarray, target: float) -> float:
    ranked = np.sort(positive_scores)[::-1]
    # The k-th highest positive score keeps k positives at or above it. The epsilon stops
    # 0.7 * 10 = 7.000000000000001 from asking for 8.
    k = max(1, math.ceil(target * len(ranked) - 1e-9))
    return float(ranked[k - 1])


def _youden_threshold(positive: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(positive, scores)
    finite = np.isfinite(thresholds)  # the first one is +inf: "flag nothing"
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(thresholds[int(np.argmax(j))])
