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
from diagnosis.results import StudyResult, study_result
from training.models import ModelVersion

logger = logging.getLogger(__name__)


def prediction_enqueue_on_commit(prediction_id: int, *, recorded: bool = False) -> None:
    """Send the inference task once the current transaction commits.

    robust=True: a broker that is down must not undo an accepted upload; the prediction stays
    queued in the database, which is the source of truth, and can be sent again. `recorded`:
    the caller already counted this dispatch in the row (dispatches, last_dispatched_at).
    """
    transaction.on_commit(
        lambda: prediction_dispatch(prediction_id, record=not recorded), robust=True
    )


def prediction_dispatch(
    prediction_id: int, *, countdown: float | None = None, record: bool = True,
    priority: int | None = None,
) -> None:
    """Record the dispatch in the row (the reconciler reads it), then send the task.

    `priority`: the broker's message priority, for re-runs that must wait behind uploads
    (diagnosis.services.reanalysis); None sends at the default, the most urgent.

    If the broker is unreachable the row still says queued and the send is not counted: the
    reconciler sends it again at its next run after the broker is back (see _dispatch_failed).
    """
    from diagnosis.tasks import run_prediction

    if record:
        Prediction.objects.filter(pk=prediction_id).update(
            dispatches=F("dispatches") + 1, last_dispatched_at=timezone.now()
        )
    try:
        if countdown or priority is not None:
            run_prediction.apply_async((prediction_id,), countdown=countdown, priority=priority)
        else:
            run_prediction.delay(prediction_id)
    except Exception:
        _dispatch_failed(prediction_id)
        raise


def _dispatch_failed(prediction_id: int) -> None:
    """The broker did not take the message. Uncount the send, and date it back by the
    reconciler's deadline for lost messages, so that the reconciler's next run (once the broker
    is back, since it is scheduled through it) sends it again, instead of waiting out that
    deadline (CXR_RECONCILE_QUEUED_AFTER_S, 10 minutes by default) as for a message that was
    taken and then lost. Failed sends never count towards CXR_PREDICTION_MAX_DISPATCHES, so a
    long broker outage fails no prediction."""
    due = timezone.now() - dt.timedelta(seconds=settings.CXR_RECONCILE_QUEUED_AFTER_S + 1)
    try:
        Prediction.objects.filter(
            pk=prediction_id, status=Prediction.Status.QUEUED, dispatches__gt=0
        ).update(dispatches=F("dispatches") - 1, last_dispatched_at=due)
    except DatabaseError:
        logger.warning("prediction %s: could not record the failed send; the reconciler will "
                       "send it again after its deadline", prediction_id, exc_info=True)


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


def _worker_identity(worker: str) -> str:
    """Who claims: the given worker name, or this process (host:pid), as the column holds it."""
    return (worker or process_identity())[:200]


def _claim_values(worker: str, now: dt.datetime) -> dict:
    """The UPDATE that makes a prediction this worker's: running since `now`, one attempt more."""
    return {
        "status": Prediction.Status.RUNNING, "started_at": now, "finished_at": None,
        "attempts": F("attempts") + 1, "worker": worker, "error": "",
    }


def prediction_claim(*, prediction_id: int, worker: str = "") -> Prediction | None:
    """Claim a prediction for this worker process with one conditional UPDATE.

    A running prediction is taken over when it is stale (running longer than the hard time limit
    allows), when the process that claimed it, on this host, no longer exists (a worker child
    killed mid-task, whose message Celery redelivers at once with reject_on_worker_lost), or when
    it is this very process: a pool process runs one task at a time, so its own claim on a row it
    is not working on was left by an attempt that stopped on an error (e.g. the database went
    away while it saved a micro-batch).
    Returns None when there is nothing to do: it is done or failed (a redelivered task, or it was
    analysed in another prediction's micro-batch), another live worker is running it, it is
    waiting for a model, or it no longer exists.
    """
    worker = _worker_identity(worker)
    current = Prediction.objects.filter(pk=prediction_id).values("status", "worker").first()
    if current is None or current["status"] in (Prediction.Status.DONE, Prediction.Status.FAILED):
        return None
    now = timezone.now()
    stale_before = now - dt.timedelta(seconds=settings.CXR_PREDICTION_STALE_AFTER_S)
    claimable = Q(status=Prediction.Status.QUEUED) | Q(
        status=Prediction.Status.RUNNING, started_at__lt=stale_before
    )
    if current["status"] == Prediction.Status.RUNNING and (
        current["worker"] == worker or process_is_dead(current["worker"])
    ):
        claimable |= Q(status=Prediction.Status.RUNNING, worker=current["worker"])
    claimed = (
        Prediction.objects.filter(pk=prediction_id, model_version__isnull=False)
        .filter(claimable)
        .update(**_claim_values(worker, now))
    )
    if claimed != 1:
        return None
    return Prediction.objects.select_related("image", "model_version").get(pk=prediction_id)


# Which waiting predictions join a micro-batch first: the most urgent study, then the oldest.
_BATCH_ORDER = ("-image__study__priority", "queued_at", "pk")


def predictions_claim_batch_companions(
    *, prediction: Prediction, limit: int, worker: str = ""
) -> list[Prediction]:
    """Micro-batching: claim up to `limit` other predictions waiting for the same model version.

    Only what is already queued is taken (nothing waits for a batch to fill), most urgent study
    first, then oldest. One conditional UPDATE claims them all: its own condition (queued, never
    attempted) is checked again on each row as it is written, so a row another worker claimed
    meanwhile is skipped, never claimed twice. The claimed rows are then read back by their claim
    (this worker, this batch's claim time). Only fresh predictions (never attempted) are batched:
    one that was already attempted may be the image that killed its worker, and runs alone.
    Their own task messages, when they arrive, find them running or done and do nothing.
    """
    if limit <= 0:
        return []
    worker = _worker_identity(worker)
    fresh = Prediction.objects.filter(
        status=Prediction.Status.QUEUED, attempts=0, model_version_id=prediction.model_version_id
    )
    candidates = fresh.exclude(pk=prediction.pk).order_by(*_BATCH_ORDER).values("pk")[:limit]
    now = prediction.started_at  # one batch: one worker, one claim time
    if not fresh.filter(pk__in=candidates).update(**_claim_values(worker, now)):
        return []
    return list(
        Prediction.objects.select_related("image", "model_version")
        .filter(status=Prediction.Status.RUNNING, worker=worker, started_at=now)
        .exclude(pk=prediction.pk)
        .order_by(*_BATCH_ORDER)
    )


def prediction_run(*, prediction_id: int, worker: str = "") -> Prediction | None:
    """Run the model and Grad-CAM for one queued prediction, and for a micro-batch of others
    waiting for the same model (see inference.batch_size) in one forward pass. Idempotent.

    Permanent problems (unreadable image, missing or corrupt weights) mark a prediction failed
    with a message at once. Any other error (the model crashed on this image) puts it back in the
    queue behind the others, up to CXR_PREDICTION_MAX_ATTEMPTS, then marks it failed with the
    error: a poison image never blocks the queue, and never fails the images batched with it
    (a batch that crashes is run again one image at a time). Database errors propagate, so the
    task retries; the batch's other rows are put back in the queue first when the database
    allows it.
    Returns this task's own prediction, or None when there was nothing to do.
    """
    worker = _worker_identity(worker)
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
    batch = [prediction]
    if prediction.attempts == 1:
        from diagnosis import inference  # imports torch: worker side only

        batch += predictions_claim_batch_companions(
            prediction=prediction, limit=inference.batch_size() - 1, worker=worker
        )
    outcomes = _compute_batch(batch)
    # The batch's outcomes are stored in one transaction: one commit (one WAL flush, for which
    # the worker's core would otherwise sit idle) per batch instead of one or two per image. A
    # database error (or any other, e.g. a full disk) stores none of them: their files are
    # removed, the companions go back to the queue, and this task's retry (or the reconciler)
    # takes its own claim back. A storage that cannot take the files (not writable, full) is
    # each prediction's error at once: retried, then failed, not left running for the reconciler.
    finished: dict[int, Prediction | None] = {}
    written: list[str] = []
    try:
        with transaction.atomic():
            for member, outcome in zip(batch, outcomes, strict=True):
                finished[member.pk] = _prediction_finish(member, outcome, written=written)
    except BaseException as exc:
        storage_delete_quietly(written)
        if isinstance(exc, OSError):
            logger.error("prediction %s: results not stored: %s", prediction_id, exc)
            reason = exc.strerror or type(exc).__name__
            message = (f"The result could not be stored ({reason}): the media storage is full "
                       "or not writable.")
            return {m.pk: _prediction_retry_or_fail(m, message) for m in batch}[prediction.pk]
        _release_unfinished(batch[1:], worker=worker)
        raise
    if len(batch) > 1:
        logger.info("prediction %s: ran in a micro-batch of %d", prediction_id, len(batch))
    return finished[prediction.pk]


def _prediction_finish(
    prediction: Prediction, outcome: dict | Exception, *, written: list[str] | None = None
) -> Prediction | None:
    """Store one prediction's outcome: the result, a failure, or back to the queue.

    The names of the files of a stored result are added to ``written``, for the caller to
    remove when its transaction does not commit."""
    if isinstance(outcome, PredictionFailure):
        return _prediction_fail(prediction, str(outcome))
    if isinstance(outcome, Exception):
        return _prediction_retry_or_fail(prediction, f"{type(outcome).__name__}: {outcome}")

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
    return prediction


def _prediction_retry_or_fail(prediction: Prediction, message: str) -> Prediction:
    """Back to the queue with this error, or failed with it once the attempts are spent."""
    if prediction.attempts >= settings.CXR_PREDICTION_MAX_ATTEMPTS:
        return _prediction_fail(
            prediction, f"Failed {prediction.attempts} times; last error: {message}"
        )
    return _prediction_requeue(prediction, message)


def storage_delete_quietly(names: list[str]) -> None:
    """Remove files written for rows that were not stored; a storage that fails here too (the
    reason they were not) must not hide the first error."""
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("could not remove %s", name, exc_info=True)


def _release_unfinished(predictions: list[Prediction], *, worker: str) -> None:
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
            ).update(status=Prediction.Status.QUEUED, started_at=None,
                     attempts=F("attempts") - 1):
                prediction_dispatch(member.pk)
    except Exception:  # noqa: BLE001 - the original database error is what the task reports
        logger.warning("could not put %d batched predictions back in the queue; the reconciler "
                       "will", len(predictions), exc_info=True)


def study_result_store(*, study_id: int) -> StudyResult:
    """Store what the worklist sorts and filters by from the study's result
    (:func:`diagnosis.results.study_result`): the flag, its finding and the result's label.

    Called whenever a view's prediction finishes, and when a version's normal classes or
    thresholds change: the flag follows the study's current result, up and down.
    """
    result = study_result(Prediction.objects.filter(image__study_id=study_id)
                          .select_related("model_version"))
    finding = result.flagged_classes[0][:64] if result.flagged else ""
    Study.objects.filter(pk=study_id).exclude(
        flagged_by_model=result.flagged, flagged_finding=finding,
        result_label=(result.label or "")[:64],
    ).update(flagged_by_model=result.flagged, flagged_finding=finding,
             result_label=(result.label or "")[:64])
    return result


def study_flag_from_prediction(*, prediction: Prediction) -> bool:
    """After `prediction` finished: store its study's result (see study_result_store); whether
    the study is flagged now."""
    return study_result_store(study_id=prediction.image.study_id).flagged


def studies_restore_for_version(*, version: ModelVersion) -> int:
    """Store the result again of every study with a prediction of `version` (after its normal
    classes or thresholds changed); how many studies."""
    ids = list(Study.objects.filter(images__predictions__model_version=version)
               .values_list("pk", flat=True).distinct())
    for pk in ids:
        study_result_store(study_id=pk)
    return len(ids)


def open_display(image: Image, preprocessing):
    """The stored display copy, read for a model with ``preprocessing`` the way training reads
    its images (:func:`training.ml.imaging.decode_upload`'s ``read_long_side``): no smaller than
    the model's :func:`~training.ml.preprocessing.reading_long_side`, also enough for the
    overlay, a JPEG reduced by its decoder, anything larger then by a whole factor."""
    from PIL import Image as PILImage

    from training.ml.preprocessing import jpeg_draft, reading_long_side, reduce_for_reading

    long_side = reading_long_side(preprocessing)
    try:
        with image.display.open("rb") as fh:
            picture = PILImage.open(io.BytesIO(fh.read()), formats=["PNG", "JPEG"])
            jpeg_draft(picture, long_side)
            picture.load()
            picture = reduce_for_reading(picture, long_side)
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
            # A claim beyond the limit only marks the row failed, never runs the model: if its
            # process died in between, it does not count as an attempt at the image.
            tried = min(p.attempts, settings.CXR_PREDICTION_MAX_ATTEMPTS)
            if Prediction.objects.filter(pk=p.pk, status=Prediction.Status.RUNNING,
                                         worker=p.worker).update(
                status=Prediction.Status.FAILED, finished_at=now,
                error=(f"Gave up after {tried} attempts: the worker stopped while "
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


def _compute_batch(batch: list[Prediction]) -> list[dict | Exception]:
    """The outcome of each prediction of a micro-batch (one model version): a result dict, or
    the exception that is that prediction's failure. One forward/backward pass for the batch;
    if it raises, each image is run alone so that only the image at fault fails."""
    from diagnosis import inference  # imports torch: worker side only
    from training.ml.infer.render import render_pngs

    outcomes: list[dict | Exception | None] = [None] * len(batch)
    try:
        predictor = inference.predictor_for(batch[0].model_version)
    except DatabaseError:
        raise
    except Exception as exc:  # noqa: BLE001 - PredictionFailure fails them; anything else retries
        if not isinstance(exc, PredictionFailure):
            logger.exception("model version %s could not be loaded", batch[0].model_version_id)
        return [exc] * len(batch)
    pictures = {}
    for i, member in enumerate(batch):
        try:
            pictures[i] = open_display(member.image, predictor.preprocessing)
        except DatabaseError:
            raise
        except Exception as exc:  # noqa: BLE001 - an unreadable file is this image's failure
            outcomes[i] = exc if isinstance(exc, PredictionFailure) else PredictionFailure(
                f"The stored image cannot be read: {type(exc).__name__}: {exc}"
            )
    groups = [list(pictures)] if pictures else []
    while groups:
        indices = groups.pop()
        started = time.perf_counter()
        try:
            _inject_fault([batch[i] for i in indices])
            results = predictor.predict([pictures[i] for i in indices])
        except DatabaseError:
            raise
        except Exception as exc:  # noqa: BLE001 - the model crashed: isolate the image at fault
            if len(indices) > 1:
                logger.warning("a micro-batch of %d failed (%s); running its images one at a "
                               "time", len(indices), exc)
                groups.extend([i] for i in reversed(indices))
                continue
            logger.exception("prediction %s failed (attempt %d)", batch[indices[0]].pk,
                             batch[indices[0]].attempts)
            outcomes[indices[0]] = exc
            continue
        predict_ms = (time.perf_counter() - started) * 1000.0 / len(indices)
        for i, result in zip(indices, results, strict=True):
            started = time.perf_counter()
            try:
                heatmap_png, overlay_png = render_pngs(pictures[i], result.cam)
            except Exception as exc:  # noqa: BLE001
                logger.exception("prediction %s: rendering failed", batch[i].pk)
                outcomes[i] = exc
                continue
            outcomes[i] = {
                "probabilities": {k: float(v) for k, v in result.probabilities.items()},
                "label": result.label,
                "cam_class": result.cam_class,
                "heatmap": heatmap_png,
                "overlay": overlay_png,
                "device": str(predictor.device),
                # This image's share of the batch's pass, plus its own rendering.
                "compute_ms": predict_ms + (time.perf_counter() - started) * 1000.0,
            }
    return outcomes


def _inject_fault(members: list[Prediction]) -> None:
    """Test hooks (CXR_FAULT_INJECTION=true only): behave like a model that crashes on a file
    whose name contains "poison", taking down the whole forward pass it is in, or that takes
    3 s over one whose name starts with "slow": long enough for a fault test to catch it running
    even while it is still killing and replacing a worker."""
    if not settings.CXR_FAULT_INJECTION:
        return
    names = [m.image.original_filename for m in members]
    if any("poison" in name for name in names):
        raise RuntimeError("injected fault: the model crashed on this image")
    if any(name.startswith("slow") for name in names):
        time.sleep(3.0)
