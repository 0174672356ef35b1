"""Site calibrations of a model version: request one (a dataset's split or the signed readings of
the last N studies), fit it on a training worker or in `manage.py calibrate`, activate it.

A calibration never changes the weights. Activating one copies its temperature, thresholds and
OOD reference into the version's live fields and sets ``ModelVersion.calibration_number``, which
keys the inference workers' model cache, so the next prediction uses it. Predictions made before
keep the probabilities (and study results) they had.
"""

from __future__ import annotations

import logging

from django.core.files import File
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit
from training.dispatch import calibration_enqueue_on_commit
from training.models import Dataset, ModelCalibration, ModelVersion
from training.services.calibration_data import (
    CalibrationRejected,
    check_data,
    dataset_data,
    fit,
    readings_data,
    temporary_dir,
)
from training.services.datasets import DatasetRejected

logger = logging.getLogger(__name__)

CALIBRATION_SPLITS = ("val", "test", "all")

__all__ = [
    "CALIBRATION_SPLITS",
    "CalibrationRejected",
    "calibration_activate",
    "calibration_execute",
    "calibration_initial_create",
    "calibration_request",
]


def calibration_initial_create(*, version: ModelVersion) -> ModelCalibration:
    """Calibration 1 of ``version``: the temperature, thresholds and OOD reference it was created
    with (its training's validation split, or the imported checkpoint's), active. Idempotent."""
    existing = version.calibrations.filter(number=1).first()
    if existing is not None:
        return existing
    run = version.training_run
    val = ((run.result or {}).get("val_metrics") or {}) if run is not None else {}
    calibration = ModelCalibration(
        version=version,
        number=1,
        kind=ModelCalibration.Kind.TRAINING,
        status=ModelCalibration.Status.DONE,
        source="training validation split"
        if run is not None
        else "recorded with the imported weights",
        n_images=int(val.get("n") or 0),
        target_sensitivity=(run.config or {}).get("target_sensitivity") if run else None,
        temperature=float(version.temperature or 1.0),
        thresholds=dict(version.thresholds or {}),
        ood_reference=version.ood_reference.name or "",
        ood_summary=dict(version.ood_summary or {}),
        activations=[version.created_at.isoformat()] if version.created_at else [],
        created_by=version.created_by,
        finished_at=version.created_at,
    )
    calibration.save()
    if version.calibration_number != 1:
        ModelVersion.objects.filter(pk=version.pk).update(calibration_number=1)
        version.calibration_number = 1
    return calibration


def calibration_request(
    *,
    version: ModelVersion,
    dataset: Dataset | None = None,
    split: str = "val",
    readings: int | None = None,
    target_sensitivity: float,
    created_by=None,
    enqueue: bool = True,
) -> ModelCalibration:
    """A queued calibration of ``version`` on ``dataset``'s ``split`` or on the signed readings of
    the last ``readings`` studies; sent to a training worker after the commit unless
    ``enqueue`` is False (the command runs it itself)."""
    if (dataset is None) == (readings is None):
        raise CalibrationRejected("Calibrate on a dataset or on readings (one of the two).")
    if dataset is not None:
        if split not in CALIBRATION_SPLITS:
            raise CalibrationRejected(
                f"Unknown split {split!r}: use one of {', '.join(CALIBRATION_SPLITS)}."
            )
        if dataset.status != Dataset.Status.READY:
            raise CalibrationRejected(f"Dataset {dataset.name} is not ready ({dataset.status}).")
    if readings is not None and readings < 1:
        raise CalibrationRejected("Give the number of recent studies, at least 1.")
    if not 0.0 < target_sensitivity <= 1.0:
        raise CalibrationRejected(
            f"The target sensitivity must be above 0 and at most 1, got {target_sensitivity}."
        )
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        calibration_initial_create(version=version)
        number = (version.calibrations.aggregate(n=Max("number"))["n"] or 0) + 1
        calibration = ModelCalibration.objects.create(
            version=version,
            number=number,
            kind=ModelCalibration.Kind.DATASET if dataset else ModelCalibration.Kind.READINGS,
            dataset=dataset,
            split=split if dataset else "",
            readings=readings,
            source=f"dataset {dataset.name} split {split}"
            if dataset
            else f"signed readings of the last {readings} studies",
            target_sensitivity=target_sensitivity,
            created_by=created_by,
        )
        if enqueue:
            calibration_enqueue_on_commit(calibration.pk)
    return calibration


def calibration_execute(*, calibration_id: int, activate: bool = False) -> ModelCalibration | None:
    """Fit a queued calibration (None if another worker took it): done, or failed with a message
    that says what to do. Audited as a fit; with ``activate``, made active at once."""
    claimed = ModelCalibration.objects.filter(
        pk=calibration_id, status=ModelCalibration.Status.QUEUED
    ).update(status=ModelCalibration.Status.RUNNING)
    if claimed != 1:
        return None
    calibration = ModelCalibration.objects.select_related("version", "dataset", "created_by").get(
        pk=calibration_id
    )
    version = calibration.version
    try:
        data = (
            dataset_data(calibration)
            if calibration.kind == ModelCalibration.Kind.DATASET
            else readings_data(calibration)
        )
        check_data(data, version)
        with temporary_dir() as work_dir:
            fitted = fit(calibration, data, work_dir)
            _store(calibration, fitted)
    except (CalibrationRejected, DatasetRejected) as exc:
        return _fail(calibration, str(exc))
    except Exception as exc:  # noqa: BLE001 - the row must say what happened
        from training.ml.errors import MLError

        if not isinstance(exc, MLError | FileNotFoundError):
            logger.exception("calibration %s failed", calibration.pk)
        return _fail(calibration, f"{type(exc).__name__}: {exc}")
    audit(
        None,
        AuditEvent.Action.CALIBRATE,
        version,
        user=calibration.created_by,
        detail=_detail(calibration),
    )
    if activate:
        calibration_activate(calibration=calibration, actor=calibration.created_by)
    return calibration


def _store(calibration: ModelCalibration, fitted) -> None:
    calibration.temperature = fitted.temperature
    calibration.thresholds = fitted.thresholds
    calibration.metrics = fitted.metrics
    calibration.n_images = fitted.n_images
    calibration.ood_summary = fitted.ood_summary
    if fitted.ood_file is not None:
        with open(fitted.ood_file, "rb") as fh:
            calibration.ood_reference.save(
                f"{calibration.version.sha256[:12]}-cal{calibration.number}.npz",
                File(fh),
                save=False,
            )
    calibration.status = ModelCalibration.Status.DONE
    calibration.finished_at = timezone.now()
    calibration.save()


def _detail(calibration: ModelCalibration) -> dict:
    return {
        "calibration": calibration.number,
        "source": calibration.source,
        "n_images": calibration.n_images,
        "temperature": calibration.temperature,
        "thresholds": calibration.thresholds,
        "ood_threshold": calibration.ood_threshold,
        "ece_before": calibration.ece_before,
        "ece_after": calibration.ece_after,
    }


def _fail(calibration: ModelCalibration, message: str) -> ModelCalibration:
    ModelCalibration.objects.filter(pk=calibration.pk).update(
        status=ModelCalibration.Status.FAILED, error=message[:4000], finished_at=timezone.now()
    )
    calibration.refresh_from_db()
    return calibration


@transaction.atomic
def calibration_activate(
    *, calibration: ModelCalibration, actor=None, request=None
) -> ModelVersion:
    """Make a fitted calibration the version's active one: its values become the live ones, and
    the workers' model cache (keyed by the calibration number) loads them for the next image."""
    version = ModelVersion.objects.select_for_update().get(pk=calibration.version_id)
    calibration = ModelCalibration.objects.select_for_update().get(pk=calibration.pk)
    if calibration.status != ModelCalibration.Status.DONE:
        raise CalibrationRejected(
            f"Calibration {calibration.number} is {calibration.get_status_display().lower()}; "
            "only a finished calibration can be activated."
        )
    previous = version.calibration_number
    version.temperature = float(calibration.temperature or 1.0)
    version.thresholds = dict(calibration.thresholds or {})
    version.calibration_number = calibration.number
    version.ood_reference.name = calibration.ood_reference.name or ""
    version.ood_summary = dict(calibration.ood_summary or {})
    version.save(
        update_fields=[
            "temperature",
            "thresholds",
            "calibration_number",
            "ood_reference",
            "ood_summary",
        ]
    )
    calibration.activations = [*(calibration.activations or []), timezone.now().isoformat()]
    calibration.save(update_fields=["activations"])
    audit(
        request,
        AuditEvent.Action.ACTIVATE_CALIBRATION,
        version,
        user=actor,
        detail={"previous": previous, **_detail(calibration)},
    )
    logger.info(
        "model version %s: calibration %d active (was %d)",
        version.name,
        calibration.number,
        previous,
    )
    return version
