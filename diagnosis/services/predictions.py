"""Predictions, the web side: re-runs, predictions waiting for a model, and the study's stored
result. Sending to the workers is diagnosis.dispatch; running them is diagnosis.worker."""

from __future__ import annotations

import logging

from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from diagnosis.dispatch import prediction_enqueue_on_commit
from diagnosis.models import Prediction, Study
from diagnosis.results import StudyResult, study_result
from diagnosis.services.webhooks import webhook_delivery_create
from training.models import ModelVersion

logger = logging.getLogger(__name__)


@transaction.atomic
def prediction_rerun(*, prediction: Prediction) -> Prediction:
    """Queue a failed prediction again (e.g. after the model file was fixed)."""
    updated = Prediction.objects.filter(pk=prediction.pk, status=Prediction.Status.FAILED).update(
        status=Prediction.Status.QUEUED,
        error="",
        attempts=0,
        started_at=None,
        finished_at=None,
        queued_at=timezone.now(),
    )
    if not updated:
        raise ValueError("Only a failed prediction can be re-run.")
    prediction.refresh_from_db()
    if prediction.model_version_id is None:
        version = ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()
        if version is not None:
            prediction.model_version = version
            prediction.save(update_fields=["model_version"])
    if prediction.model_version_id is not None:
        prediction_enqueue_on_commit(prediction.pk)
    return prediction


def predictions_assign_waiting(*, version: ModelVersion) -> int:
    """Give predictions that were waiting for a production model to `version` and queue them.

    Called inside the promotion's transaction; the tasks are sent after it commits.
    """
    waiting = Prediction.objects.select_for_update().filter(
        model_version__isnull=True, status=Prediction.Status.QUEUED
    )
    count = 0
    for prediction in waiting:
        if Prediction.objects.filter(image_id=prediction.image_id, model_version=version).exists():
            # This image already has a prediction from this version (e.g. after a roll back).
            prediction.status = Prediction.Status.FAILED
            prediction.error = f"Superseded by the existing prediction of {version.name}."
            prediction.model_version = None
            prediction.save(update_fields=["status", "error"])
            continue
        prediction.model_version = version
        prediction.queued_at = timezone.now()
        prediction.save(update_fields=["model_version", "queued_at"])
        prediction_enqueue_on_commit(prediction.pk)
        count += 1
    return count


def storage_delete_quietly(names: list[str]) -> None:
    """Remove files written for rows that were not stored; a storage that fails here too (the
    reason they were not) must not hide the first error."""
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("could not remove %s", name, exc_info=True)


def study_result_store(*, study_id: int) -> StudyResult:
    """Store what the worklist sorts and filters by from the study's result
    (:func:`diagnosis.results.study_result`): the flag, its finding and the result's label as
    the surfaces show it (``shown_label``: an unreliable normal is stored as unreliable, so the
    worklist's filter by a normal class never lists it).

    Called whenever a view's prediction finishes, and when a version's normal classes or
    thresholds change: the flag follows the study's current result, up and down. A flagged
    result may be announced by webhook (diagnosis.services.webhooks).
    """
    result = study_result(
        Prediction.objects.filter(image__study_id=study_id).select_related("model_version")
    )
    finding = result.flagged_classes[0][:64] if result.flagged else ""
    label = (result.shown_label or "")[:64]
    Study.objects.filter(pk=study_id).exclude(
        flagged_by_model=result.flagged, flagged_finding=finding, result_label=label
    ).update(flagged_by_model=result.flagged, flagged_finding=finding, result_label=label)
    webhook_delivery_create(study_id=study_id, result=result)
    return result


def study_flag_from_prediction(*, prediction: Prediction) -> bool:
    """After `prediction` finished: store its study's result (see study_result_store); whether
    the study is flagged now."""
    return study_result_store(study_id=prediction.image.study_id).flagged


def studies_restore_for_version(*, version: ModelVersion) -> int:
    """Store the result again of every study with a prediction of `version` (after its normal
    classes or thresholds changed); how many studies."""
    ids = list(
        Study.objects.filter(images__predictions__model_version=version)
        .values_list("pk", flat=True)
        .distinct()
    )
    for pk in ids:
        study_result_store(study_id=pk)
    return len(ids)
