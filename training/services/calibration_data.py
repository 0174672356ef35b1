"""What a site calibration is fitted on (a dataset's split, or the signed readings of the last N
studies), and the fit itself: temperature, thresholds and the OOD reference. Imports torch
lazily: call it from a worker or a command."""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from django.conf import settings

from training.models import ModelCalibration, ModelVersion
from training.services.datasets import dataset_folder
from training.signals import calibration_readings_requested

logger = logging.getLogger(__name__)

#: The share of the images held out to threshold the OOD reference (fitted on the rest).
OOD_HELD_OUT = 0.3


class CalibrationRejected(Exception):
    """A calibration cannot be fitted on these images; the message says why and what to do."""


@dataclass
class CalibrationData:
    """The images a calibration is fitted on: where to read them, their class indices (the
    version's order), and, for readings, the logits behind the stored probabilities."""

    root: str
    samples: list[tuple[str, int]]
    logits: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FittedCalibration:
    temperature: float
    thresholds: dict[str, float]
    metrics: dict[str, Any]
    n_images: int
    ood_file: Path | None
    ood_summary: dict[str, Any]


def dataset_data(calibration: ModelCalibration) -> CalibrationData:
    """A dataset's split, its classes matched to the version's by name (case-insensitively)."""
    version, dataset = calibration.version, calibration.dataset
    assert dataset is not None
    by_fold = {c.casefold(): i for i, c in enumerate(version.class_labels)}
    unknown = [c for c in dataset.classes if c.casefold() not in by_fold]
    if unknown:
        raise CalibrationRejected(
            f"Dataset {dataset.name} has class(es) {', '.join(unknown)} that {version.name} does "
            f"not know (its classes: {', '.join(version.class_labels)}). Calibrate on a dataset "
            "with the version's class names (one folder per class)."
        )
    remap = [by_fold[c.casefold()] for c in dataset.classes]
    samples = [(str(path), remap[label]) for path, label in dataset.scan.get("samples", [])]
    if calibration.split == "all":
        indices = list(range(len(samples)))
    else:
        indices = [int(i) for i in (dataset.split or {}).get(calibration.split, [])]
    return CalibrationData(root=dataset_folder(dataset), samples=[samples[i] for i in indices])


def readings_data(calibration: ModelCalibration) -> CalibrationData:
    """The signed readings of the last N studies read against the version: final labels against
    the stored predictions. Logits are recovered as ``T * log(p)`` with the temperature of the
    calibration that was active when each prediction was made."""
    from training.ml.train.recalibrate import logits_from_probabilities

    version = calibration.version
    rows: list[dict] = []
    for _, answer in calibration_readings_requested.send(
        sender=ModelVersion, version=version, studies=calibration.readings
    ):
        rows.extend(cast("list[dict]", answer) or [])  # django-stubs types answers as str
    by_fold = {c.casefold(): i for i, c in enumerate(version.class_labels)}
    at_time = _temperature_at(version)
    samples, logits, other = [], [], 0
    for row in rows:
        label = by_fold.get(str(row["label"]).casefold())
        probs = row.get("probabilities") or {}
        if label is None or any(c not in probs for c in version.class_labels):
            other += 1  # "other", or a class the version lacks: nothing to calibrate against
            continue
        p = [[float(probs[c]) for c in version.class_labels]]
        logits.append(logits_from_probabilities(p, at_time(row.get("finished_at")))[0])
        samples.append((str(row["path"]), label))
    notes = (
        [f"{other} image(s) whose final label is not a class of the version left out"]
        if other
        else []
    )
    return CalibrationData(
        root=str(settings.MEDIA_ROOT),
        samples=samples,
        logits=np.array(logits, dtype=np.float64).reshape(len(samples), len(version.class_labels)),
        notes=notes,
    )


def _temperature_at(version: ModelVersion):
    """A function: the temperature the version read images with at a given time (from its
    calibrations' activation times; the active one's for an unknown time)."""
    changes: list[tuple[dt.datetime, float]] = []
    for cal in version.calibrations.filter(status=ModelCalibration.Status.DONE):
        for at in cal.activations or []:
            changes.append((dt.datetime.fromisoformat(str(at)), float(cal.temperature or 1.0)))
    changes.sort()
    times = [at for at, _ in changes]
    current = float(version.temperature or 1.0)

    def at_time(when: dt.datetime | None) -> float:
        if when is None or not changes:
            return current
        i = bisect.bisect_right(times, when)
        return changes[i - 1][1] if i else changes[0][1]

    return at_time


def check_data(data: CalibrationData, version: ModelVersion) -> None:
    """Refuse too few images, or a class with no example (its threshold cannot be chosen)."""
    least = settings.CXR_CALIBRATION_MIN_IMAGES
    if len(data.samples) < least:
        raise CalibrationRejected(
            f"Only {len(data.samples)} usable image(s); a calibration needs at least {least} "
            "(CXR_CALIBRATION_MIN_IMAGES). Use a larger split (e.g. --split all) or more readings."
        )
    seen = {label for _, label in data.samples}
    missing = [c for i, c in enumerate(version.class_labels) if i not in seen]
    if missing:
        raise CalibrationRejected(
            f"No image of class(es) {', '.join(missing)}: every class needs examples to choose "
            "its threshold. Add images of those classes, or use more readings."
        )


def fit(calibration: ModelCalibration, data: CalibrationData, work_dir: str) -> FittedCalibration:
    """Run the model over the images (features for the OOD reference; logits too unless the
    readings gave them), then fit temperature, thresholds and the OOD reference."""
    from training.ml.models.checkpoint import file_sha256
    from training.ml.preprocessing import Preprocessing
    from training.ml.train.recalibrate import calibration_fit, forward_pass

    version = calibration.version
    if file_sha256(version.weights.path) != version.sha256:
        raise CalibrationRejected(
            f"The weights file of {version.name} does not match its recorded sha256: it was "
            "changed or corrupted. Re-import the model, then calibrate."
        )
    out = forward_pass(
        version.weights.path,
        data.root,
        data.samples,
        arch=version.architecture,
        classes=list(version.class_labels),
        preprocessing=Preprocessing.from_dict(version.preprocessing_dict()),
        with_features=True,
    )
    logits = data.logits if data.logits is not None else out.logits
    result = calibration_fit(
        logits,
        out.labels,
        list(version.class_labels),
        temperature_before=float(version.temperature or 1.0),
        thresholds_before={c: version.threshold_for(c) for c in version.class_labels},
        target_sensitivity=float(calibration.target_sensitivity or 0.9),
    )
    ood_file, summary = _fit_ood(out.features, out.labels, Path(work_dir))
    metrics: dict[str, Any] = {"before": result.before, "after": result.after}
    if data.notes:
        metrics["notes"] = data.notes
    return FittedCalibration(
        temperature=result.temperature,
        thresholds=result.thresholds,
        metrics=metrics,
        n_images=len(out.labels),
        ood_file=ood_file,
        ood_summary=summary,
    )


def _fit_ood(
    features: np.ndarray | None, labels: np.ndarray, work_dir: Path
) -> tuple[Path | None, dict[str, Any]]:
    """An OOD reference fitted on 70 % of the images' features, thresholded on the rest."""
    from training.ml.ood import fit_reference
    from training.ml.train.recalibrate import ood_split

    if features is None:
        return None, {}
    fit_rows, held = ood_split(labels, fraction=OOD_HELD_OUT)
    reference = fit_reference(
        features[fit_rows], features[held], percentile=settings.CXR_OOD_PERCENTILE
    )
    path = work_dir / "ood.npz"
    reference.save(path)
    return path, reference.to_summary()


def temporary_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="cxr-calibration-")
