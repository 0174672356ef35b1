"""Predictions: queueing, the worker side (claim, run, fail), re-runs and the reconciler.

The worker side imports the ML code lazily: this module is also imported by the web process.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import time

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from cxrweb.processes import process_identity, process_is_dead
from diagnosis.models import Image, Prediction, Study
from training.models import ModelVersion

logger = logging.getLogger(__name__)


def prediction_enqueue_on_commit(prediction_id: int) -> None:
    """Send the inference task once the current transaction commits.

    robust=True: a broker that is down must not undo an accepted upload; the prediction stays
    queued in the database, which is the source of truth, and can be sent again.
    """
    transaction.on_commit(lambda: prediction_dispatch(prediction_id), robust=True)


def prediction_dispatch(prediction_id: int, *, countdown: float | None = None) -> None:
    """Record the dispatch in the row (the reconciler reads it), then send the task.

    If the broker is unreachable the row still says queued, and the reconciler sends it again.
    """
    from diagnosis.tasks import run_prediction

    Prediction.objects.filter(pk=prediction_id).update(
        dispatches=F("dispatches") + 1, last_dispatched_at=timezone.now()
    )
    if countdown:
        run_prediction.apply_async((prediction_id,), countdown=countdown)
    else:
        run_prediction.delay(prediction_id)


@transaction.atomic
def prediction_rerun(*, prediction: Prediction) -> Prediction:
    """Queue a failed prediction again (e.g. after the model file was fixed)."""
    updated = Prediction.objects.filter(pk=prediction.pk, status=Prediction.Status.FAILED).update(
        status=Prediction.Status.QUEUED, error="", attempts=0, started_at=None, finished_at=None,
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


# --- the worker side ------------------------------------------------------------------------


class PredictionFailure(Exception):
    """A permanent failure: the prediction is marked failed with this message."""


def prediction_claim(*, prediction_id: int, worker: str = "") -> Prediction | None:
    """Claim a prediction for this worker process with one conditional UPDATE.

    A running prediction is taken over when it is stale (running longer than the hard time limit
    allows) or when the process that claimed it, on this host, no longer exists (a worker child
    killed mid-task, whose message Celery redelivers at once with reject_on_worker_lost).
    Returns None when there is nothing to do: it is done or failed (a redelivered task), another
    live worker is running it, it is waiting for a model, or it no longer exists.
    """
    worker = worker or process_identity()
    now = timezone.now()
    stale_before = now - dt.timedelta(seconds=settings.CXR_PREDICTION_STALE_AFTER_S)
    claimable = Q(status=Prediction.Status.QUEUED) | Q(
        status=Prediction.Status.RUNNING, started_at__lt=stale_before
    )
    current = Prediction.objects.filter(pk=prediction_id).values("status", "worker").first()
    if (
        current is not None
        and current["status"] == Prediction.Status.RUNNING
        and process_is_dead(current["worker"])
    ):
        claimable |= Q(status=Prediction.Status.RUNNING, worker=current["worker"])
    claimed = (
        Prediction.objects.filter(pk=prediction_id, model_version__isnull=False)
        .filter(claimable)
        .update(
            status=Prediction.Status.RUNNING, started_at=now, finished_at=None,
            attempts=F("attempts") + 1, worker=worker[:200], error="",
        )
    )
    if claimed != 1:
        return None
    return Prediction.objects.select_related("image", "model_version").get(pk=prediction_id)


def prediction_run(*, prediction_id: int, worker: str = "") -> Prediction | None:
    """Run the model and Grad-CAM for one queued prediction. Idempotent.

    Permanent problems (unreadable image, missing or corrupt weights) mark the prediction failed
    with a message at once. Any other error (the model crashed on this image) puts it back in the
    queue behind the others, up to CXR_PREDICTION_MAX_ATTEMPTS, then marks it failed with the
    error: a poison image never blocks the queue. Database errors propagate, so the task retries.
    """
    prediction = prediction_claim(prediction_id=prediction_id, worker=worker)
    if prediction is None:
        logger.info("prediction %s: nothing to do (already claimed or finished)", prediction_id)
        return None
    if prediction.attempts > settings.CXR_PREDICTION_MAX_ATTEMPTS:
        return _prediction_fail(
            prediction,
            f"Gave up after {prediction.attempts - 1} attempts: the worker stopped while "
            "analysing this image each time.",
        )
    try:
        outcome = _compute(prediction)
    except PredictionFailure as exc:
        return _prediction_fail(prediction, str(exc))
    except Exception as exc:  # noqa: BLE001 - any model/image error is this prediction's failure
        if isinstance(exc, DatabaseError):
            raise
        logger.exception("prediction %s failed (attempt %d)", prediction_id, prediction.attempts)
        message = f"{type(exc).__name__}: {exc}"
        if prediction.attempts >= settings.CXR_PREDICTION_MAX_ATTEMPTS:
            return _prediction_fail(
                prediction, f"Failed {prediction.attempts} times; last error: {message}"
            )
        return _prediction_requeue(prediction, message)

    heatmap_name = default_storage.save(
        f"heatmaps/{prediction.pk}/cam-{outcome['cam_class']}.png", ContentFile(outcome["heatmap"])
    )
    overlay_name = default_storage.save(
        f"heatmaps/{prediction.pk}/overlay.png", ContentFile(outcome["overlay"])
    )
    finished = timezone.now()
    updated = Prediction.objects.filter(
        pk=prediction.pk, status=Prediction.Status.RUNNING, started_at=prediction.started_at
    ).update(
        status=Prediction.Status.DONE,
        probabilities=outcome["probabilities"],
        label=outcome["label"],
        cam_class=outcome["cam_class"],
        cam_method="Grad-CAM",
        heatmap=heatmap_name,
        overlay=overlay_name,
        device=outcome["device"],
        compute_ms=outcome["compute_ms"],
        finished_at=finished,
    )
    if updated != 1:
        # Someone else took it over meanwhile (we were presumed dead): keep their result.
        default_storage.delete(heatmap_name)
        default_storage.delete(overlay_name)
        logger.warning("prediction %s: claim lost before saving the result", prediction.pk)
        return None
    prediction.refresh_from_db()
    study_flag_from_prediction(prediction=prediction)
    return prediction


def study_flag_from_prediction(*, prediction: Prediction) -> bool:
    """Flag the study when the top finding is abnormal at or above its threshold.

    Only ever raises a study: a later normal result (e.g. from another model version) does not
    clear the flag, and the study's own priority is never changed by the model.
    """
    version = prediction.model_version
    if prediction.status != Prediction.Status.DONE or version is None or not prediction.label:
        return False
    probability = (prediction.probabilities or {}).get(prediction.label, 0.0)
    if version.is_normal_label(prediction.label) or probability < version.threshold_for(
        prediction.label
    ):
        return False
    Study.objects.filter(pk=prediction.image.study_id, flagged_by_model=False).update(
        flagged_by_model=True, flagged_finding=prediction.label[:64]
    )
    return True


def open_display(image: Image):
    from PIL import Image as PILImage

    try:
        with image.display.open("rb") as fh:
            picture = PILImage.open(io.BytesIO(fh.read()), formats=["PNG"])
            picture.load()
    except FileNotFoundError as exc:
        raise PredictionFailure(f"The stored image file is missing ({image.display.name}).") from exc
    return picture


def _prediction_requeue(prediction: Prediction, message: str) -> Prediction:
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


def predictions_reconcile() -> dict[str, int]:
    """Send again what the broker lost; fail what cannot finish. The database is the truth.

    - queued (with a model version) and not dispatched for CXR_RECONCILE_QUEUED_AFTER_S: the
      message was lost (Redis restarted, the filesystem transport dropped it, the broker was down
      at upload time): dispatch again, at most CXR_PREDICTION_MAX_DISPATCHES times, then fail;
    - running past CXR_PREDICTION_STALE_AFTER_S, or claimed by a dead process on this host: its
      worker died; dispatch again (the claim takes it over), failing after the attempt limit.
    Re-sending is always safe: the claim makes a duplicate delivery do nothing.
    """
    now = timezone.now()
    counts = {"redispatched": 0, "failed": 0}
    queued_before = now - dt.timedelta(seconds=settings.CXR_RECONCILE_QUEUED_AFTER_S)
    lost = Prediction.objects.filter(
        status=Prediction.Status.QUEUED, model_version__isnull=False
    ).annotate(
        last=Coalesce("last_dispatched_at", "queued_at")
    ).filter(last__lt=queued_before)
    for p in lost.only("pk", "dispatches"):
        if p.dispatches >= settings.CXR_PREDICTION_MAX_DISPATCHES:
            if Prediction.objects.filter(pk=p.pk, status=Prediction.Status.QUEUED).update(
                status=Prediction.Status.FAILED, finished_at=now,
                error=(f"Sent to the workers {p.dispatches} times without being analysed: are "
                       "the inference workers running? Re-run it once they are."),
            ):
                counts["failed"] += 1
            continue
        prediction_dispatch(p.pk)
        counts["redispatched"] += 1
    stale_before = now - dt.timedelta(seconds=settings.CXR_PREDICTION_STALE_AFTER_S)
    for p in Prediction.objects.filter(status=Prediction.Status.RUNNING).only(
        "pk", "worker", "started_at", "attempts"
    ):
        if p.started_at and p.started_at >= stale_before and not process_is_dead(p.worker):
            continue
        if p.attempts >= settings.CXR_PREDICTION_MAX_ATTEMPTS:
            if Prediction.objects.filter(pk=p.pk, status=Prediction.Status.RUNNING,
                                         worker=p.worker).update(
                status=Prediction.Status.FAILED, finished_at=now,
                error=(f"Gave up after {p.attempts} attempts: the worker stopped while "
                       "analysing this image each time."),
            ):
                counts["failed"] += 1
            continue
        prediction_dispatch(p.pk)
        counts["redispatched"] += 1
    if any(counts.values()):
        logger.warning("reconciler: %s", counts)
    return counts


def _prediction_fail(prediction: Prediction, message: str) -> Prediction:
    Prediction.objects.filter(pk=prediction.pk).update(
        status=Prediction.Status.FAILED, error=message[:2000], finished_at=timezone.now()
    )
    prediction.refresh_from_db()
    logger.warning("prediction %s failed: %s", prediction.pk, message)
    return prediction


def _compute(prediction: Prediction) -> dict:
    if settings.CXR_FAULT_INJECTION and "poison" in prediction.image.original_filename:
        # Test hook (CXR_FAULT_INJECTION=true only): behave like a model that crashes on a file.
        raise RuntimeError("injected fault: the model crashed on this image")
    from diagnosis import inference  # imports torch: worker side only

    predictor = inference.predictor_for(prediction.model_version)
    picture = open_display(prediction.image)
    started = time.perf_counter()
    result = predictor.predict([picture])[0]
    heatmap_png, overlay_png = inference.render_pngs(picture, result.cam)
    compute_ms = (time.perf_counter() - started) * 1000.0
    return {
        "probabilities": {k: float(v) for k, v in result.probabilities.items()},
        "label": result.label,
        "cam_class": result.cam_class,
        "heatmap": heatmap_png,
        "overlay": overlay_png,
        "device": str(predictor.device),
        "compute_ms": compute_ms,
    }
