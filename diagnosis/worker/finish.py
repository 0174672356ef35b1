"""Finishing a claimed prediction: its result stored, a failure recorded, or back to the queue."""

from __future__ import annotations

import logging
import math

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from diagnosis.dispatch import prediction_dispatch
from diagnosis.models import Prediction
from diagnosis.services import study_flag_from_prediction
from diagnosis.services.pacs import pacs_exports_for_result
from diagnosis.worker.errors import PredictionFailure

logger = logging.getLogger(__name__)


def prediction_finish(
    prediction: Prediction, outcome: dict | Exception, *, written: list[str] | None = None
) -> Prediction | None:
    """Store one prediction's outcome: the result, a failure, or back to the queue.

    The names of the files of a stored result are added to ``written``, for the caller to
    remove when its transaction does not commit."""
    if isinstance(outcome, PredictionFailure):
        return prediction_fail(prediction, str(outcome))
    if isinstance(outcome, Exception):
        return prediction_retry_or_fail(prediction, f"{type(outcome).__name__}: {outcome}")

    heatmap_name = default_storage.save(
        f"heatmaps/{prediction.pk}/cam-{outcome['cam_class']}.png", ContentFile(outcome["heatmap"])
    )
    overlay_name = default_storage.save(
        f"heatmaps/{prediction.pk}/overlay.png", ContentFile(outcome["overlay"])
    )
    result = {
        "status": Prediction.Status.DONE,
        "probabilities": outcome["probabilities"],
        "label": outcome["label"],
        "cam_class": outcome["cam_class"],
        "cam_method": "Grad-CAM",
        "heatmap": heatmap_name,
        "overlay": overlay_name,
        "device": outcome["device"],
        "compute_ms": outcome["compute_ms"],
        "finished_at": timezone.now(),
        **ood_fields(outcome.get("ood")),
    }
    try:
        updated = Prediction.objects.filter(
            pk=prediction.pk, status=Prediction.Status.RUNNING, started_at=prediction.started_at
        ).update(**result)
    except BaseException:
        default_storage.delete(heatmap_name)  # no orphan files when the row cannot say so
        default_storage.delete(overlay_name)
        raise
    if updated != 1:
        # Someone else took it over meanwhile (we were presumed dead): keep their result.
        default_storage.delete(heatmap_name)
        default_storage.delete(overlay_name)
        logger.warning("prediction %s: claim lost before saving the result", prediction.pk)
        return None
    if written is not None:
        written += [heatmap_name, overlay_name]
    for field, value in result.items():  # what the row now holds; no second query
        setattr(prediction, field, value)
    study_flag_from_prediction(prediction=prediction)
    pacs_exports_for_result(study_id=prediction.image.study_id)
    return prediction


def ood_fields(ood: dict | None) -> dict:
    """The Prediction's ood_* fields from an OODResult.to_dict() (training.ml.ood); a model
    without an OOD result leaves them unset: no score, not flagged."""
    ood = ood or {}
    reasons = [str(r)[:500] for r in ood.get("reasons") or []]
    return {
        "ood_score": _finite(ood.get("score")),
        "ood_threshold": _finite(ood.get("threshold")),
        "ood_flagged": bool(ood.get("flagged")),
        "ood_reasons": reasons,
    }


def _finite(value: object) -> float | None:
    """A float the database and JSON can hold (no NaN or infinity), else None."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def prediction_retry_or_fail(prediction: Prediction, message: str) -> Prediction:
    """Back to the queue with this error, or failed with it once the attempts are spent."""
    if prediction.attempts >= settings.CXR_PREDICTION_MAX_ATTEMPTS:
        return prediction_fail(
            prediction, f"Failed {prediction.attempts} times; last error: {message}"
        )
    return prediction_requeue(prediction, message)


def prediction_requeue(prediction: Prediction, message: str) -> Prediction:
    """Back to the queue after a crash, behind what is waiting (a short countdown)."""
    updated = Prediction.objects.filter(
        pk=prediction.pk, status=Prediction.Status.RUNNING, started_at=prediction.started_at
    ).update(status=Prediction.Status.QUEUED, error=message[:2000], started_at=None)
    if updated:
        transaction.on_commit(
            lambda: prediction_dispatch(prediction.pk, countdown=settings.CXR_RETRY_DELAY_S),
            robust=True,
        )
    prediction.refresh_from_db()
    return prediction


def prediction_fail(prediction: Prediction, message: str) -> Prediction:
    Prediction.objects.filter(pk=prediction.pk).update(
        status=Prediction.Status.FAILED, error=message[:2000], finished_at=timezone.now()
    )
    prediction.refresh_from_db()
    logger.warning("prediction %s failed: %s", prediction.pk, message)
    pacs_exports_for_result(study_id=prediction.image.study_id)  # the SR says it failed
    return prediction


def release_unfinished(predictions: list[Prediction], *, worker: str) -> None:
    """Best effort, after an error while a batch was stored (none of it was): put the
    batch's companions back in the queue (their claim is not counted) and send them again.
    When the database is still away this fails too; then the reconciler finds them (stale)
    later."""
    if not predictions:
        return
    try:
        for member in predictions:
            if Prediction.objects.filter(
                pk=member.pk, status=Prediction.Status.RUNNING, worker=worker
            ).update(status=Prediction.Status.QUEUED, started_at=None, attempts=F("attempts") - 1):
                prediction_dispatch(member.pk)
    except Exception:  # noqa: BLE001 - the original database error is what the task reports
        logger.warning(
            "could not put %d batched predictions back in the queue; the reconciler will",
            len(predictions),
            exc_info=True,
        )
