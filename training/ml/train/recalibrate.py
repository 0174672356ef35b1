"""Site recalibration: refit a model's temperature, per-class thresholds and OOD reference on a
site's own labelled images (or on signed readings), keeping its weights.

Plain numpy and torch: the registry side (training.services.calibrations) picks the images and
stores the result. :func:`forward_pass` runs the model over images as training and evaluation read
them; :func:`calibration_fit` fits and measures; :func:`logits_from_probabilities` recovers the
logits behind stored probabilities (up to a per-row constant, which softmax ignores).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .calibration import (
    choose_thresholds,
    expected_calibration_error,
    fit_temperature,
    nll,
    softmax,
)

__all__ = [
    "CalibrationFit",
    "ForwardOutput",
    "calibration_fit",
    "calibration_metrics",
    "forward_pass",
    "logits_from_probabilities",
    "ood_split",
]

#: Probabilities are clipped here before the log: a stored 0.0 would give -inf.
_MIN_PROBABILITY = 1e-12


def logits_from_probabilities(probabilities: Any, temperature: float) -> np.ndarray:
    """``T * log(p)``: the logits behind ``softmax(z / T) = p``, up to a per-row constant."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _MIN_PROBABILITY, 1.0)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be an N x K array, got shape {p.shape}.")
    return float(temperature) * np.log(p)


def calibration_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    temperature: float,
    thresholds: Mapping[str, float],
) -> dict[str, Any]:
    """ECE, NLL and per-class sensitivity/specificity at ``thresholds`` (class c is flagged when
    ``p_c >= threshold``), at ``temperature``. Plain JSON types; None where undefined."""
    probs = softmax(logits, temperature)
    per_class: dict[str, dict[str, float | None]] = {}
    for c, name in enumerate(classes):
        flagged = probs[:, c] >= float(thresholds.get(name, 0.5))
        positive = labels == c
        per_class[name] = {
            "sensitivity": _share(flagged[positive]),
            "specificity": _share(~flagged[~positive]),
        }
    return {
        "temperature": float(temperature),
        "ece": _finite(expected_calibration_error(probs, labels)),
        "nll": _finite(nll(logits, labels, temperature)),
        "per_class": per_class,
    }


def _share(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class CalibrationFit:
    """A new temperature and thresholds, with the figures before (the calibration in use) and
    after, on the same images."""

    temperature: float
    thresholds: dict[str, float]
    before: dict[str, Any]
    after: dict[str, Any]


def calibration_fit(
    logits: Any,
    labels: Any,
    classes: Sequence[str],
    *,
    temperature_before: float,
    thresholds_before: Mapping[str, float],
    target_sensitivity: float,
) -> CalibrationFit:
    """Fit a temperature (NLL) and per-class thresholds (the most specific ones that keep
    ``target_sensitivity`` of each class's images flagged) on these images."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    temperature = fit_temperature(z, y)
    thresholds = choose_thresholds(
        y, softmax(z, temperature), list(classes), target_sensitivity=target_sensitivity
    )
    return CalibrationFit(
        temperature=temperature,
        thresholds=thresholds,
        before=calibration_metrics(
            z, y, classes, temperature=temperature_before, thresholds=thresholds_before
        ),
        after=calibration_metrics(z, y, classes, temperature=temperature, thresholds=thresholds),
    )


def ood_split(
    labels: Any, *, fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices to fit an OOD reference on and to threshold it on: ``fraction`` of each class
    (at least one image, when it has two) held out for the threshold, the rest for the fit."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fit_rows: list[int] = []
    held: list[int] = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        rng.shuffle(rows)
        k = int(round(len(rows) * fraction)) if len(rows) > 1 else 0
        k = max(k, 1) if len(rows) > 1 else 0
        held.extend(rows[:k].tolist())
        fit_rows.extend(rows[k:].tolist())
    return np.array(sorted(fit_rows), dtype=np.int64), np.array(sorted(held), dtype=np.int64)


@dataclass(frozen=True)
class ForwardOutput:
    """What :func:`forward_pass` saw: raw logits (N x K) and, when asked, pooled features."""

    logits: np.ndarray
    labels: np.ndarray
    features: np.ndarray | None


def forward_pass(
    checkpoint_path: str | os.PathLike[str],
    root: str | os.PathLike[str],
    samples: Sequence[tuple[str, int]],
    *,
    arch: str,
    classes: Sequence[str],
    preprocessing,
    with_features: bool = True,
    batch_size: int = 32,
    device=None,
) -> ForwardOutput:
    """Run the model over every sample (``(path relative to root, class index)``), read the way
    training and evaluation read them (:class:`~training.ml.train.cache.DecodedImages`): raw
    logits, and from the same forward pass the pooled penultimate features
    (:class:`training.ml.ood.FeatureCapture`) for an OOD reference."""
    import torch

    from ..models.checkpoint import build_for_inference, load_weights_file
    from .cache import DecodedImages
    from .gpu_augment import BatchAugment
    from .loop import resolve_device
    from .pipeline import DeviceBatches, place_model

    state_dict, _meta = load_weights_file(checkpoint_path)
    torch_device = resolve_device(device)
    model = place_model(build_for_inference(arch, list(classes), state_dict), torch_device)
    model.eval()
    indices = list(range(len(samples)))
    images = DecodedImages(root, samples, indices, preprocessing)
    batches = DeviceBatches(
        images,
        samples,
        indices,
        BatchAugment(preprocessing, augment="none"),
        torch_device,
        batch_size=batch_size,
    )
    from ..ood import FeatureCapture

    logits, labels = [], []
    with torch.inference_mode(), FeatureCapture(model, arch) as capture:
        for inputs, targets in batches:
            logits.append(model(inputs).float().cpu())  # the capture keeps the pooled features
            labels.append(targets.cpu())
            if not with_features:
                capture.clear()
        features = capture.features().double().numpy() if with_features else None
    return ForwardOutput(
        logits=torch.cat(logits).double().numpy(),
        labels=torch.cat(labels).numpy().astype(np.int64),
        features=features,
    )
