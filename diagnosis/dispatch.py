"""Dispatch: what the web side and the reconciler hand to the workers, and when.

Tasks are sent by name (the constants below) through the Celery app, never by importing their
consumer (diagnosis.tasks, diagnosis.worker): this module is imported by the web process, which
must not import torch. CELERY_TASK_ROUTES (settings) picks each name's queue. The database is
the source of truth: a message the broker did not take, or lost, is sent again by the
reconciler (:func:`predictions_reconcile`, a periodic task).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from cxrweb.processes import process_is_dead
from diagnosis.models import PacsExport, Prediction, WebhookDelivery

logger = logging.getLogger(__name__)

# The names diagnosis.tasks registers (tests/test_celery.py checks that they agree).
RUN_PREDICTION = "diagnosis.tasks.run_prediction"
RUN_CLASS_HEATMAP = "diagnosis.tasks.run_class_heatmap"
RECONCILE_PREDICTIONS = "diagnosis.tasks.reconcile_predictions"
RUN_DATASET_EXPORT = "diagnosis.tasks.run_dataset_export"
SEND_TO_PACS = "diagnosis.tasks.send_to_pacs"
DELIVER_WEBHOOK = "diagnosis.tasks.deliver_webhook"
TASK_NAMES = (
    RUN_PREDICTION,
    RUN_CLASS_HEATMAP,
    RECONCILE_PREDICTIONS,
    RUN_DATASET_EXPORT,
    SEND_TO_PACS,
    DELIVER_WEBHOOK,
)


def send(name: str, *args: Any, **options: Any) -> None:
    """Publish task `name` with positional `args`; `options` as Celery's apply_async takes them
    (countdown, priority). The queue comes from CELERY_TASK_ROUTES."""
    current_app.send_task(name, args=args, **options)


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
    prediction_id: int,
    *,
    countdown: float | None = None,
    record: bool = True,
    priority: int | None = None,
) -> None:
    """Record the dispatch in the row (the reconciler reads it), then send the task.

    `priority`: the broker's message priority, for re-runs that must wait behind uploads
    (diagnosis.services.reanalysis); None sends at the default, the most urgent.

    If the broker is unreachable the row still says queued and the send is not counted: the
    reconciler sends it again at its next run after the broker is back (see _dispatch_failed).
    """
    if record:
        Prediction.objects.filter(pk=prediction_id).update(
            dispatches=F("dispatches") + 1, last_dispatched_at=timezone.now()
        )
    options: dict[str, Any] = {}
    if countdown:
        options["countdown"] = countdown
    if priority is not None:
        options["priority"] = priority
    try:
        send(RUN_PREDICTION, prediction_id, **options)
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
        logger.warning(
            "prediction %s: could not record the failed send; the reconciler will "
            "send it again after its deadline",
            prediction_id,
            exc_info=True,
        )


def class_heatmap_enqueue_on_commit(heatmap_id: int) -> None:
    """Send the per-class heatmap task once the current transaction commits (robust: a broker
    that is down leaves the heatmap queued; asking again sends it)."""
    transaction.on_commit(lambda: send(RUN_CLASS_HEATMAP, heatmap_id), robust=True)


def dataset_export_enqueue_on_commit(export_id: int) -> None:
    """Send a de-identified export to the training workers once the transaction commits (robust:
    a broker that is down leaves it queued; the reconciler sends it again)."""
    transaction.on_commit(lambda: send(RUN_DATASET_EXPORT, export_id), robust=True)


def pacs_export_enqueue_on_commit(export_id: int) -> None:
    """Send a DICOM object to the PACS (diagnosis.worker.pacs) once the current transaction
    commits (robust: a broker that is down leaves the export pending, shown on the study page;
    the reconciler sends it again)."""
    transaction.on_commit(lambda: send(SEND_TO_PACS, export_id), robust=True)


def pacs_exports_reconcile() -> int:
    """Send again the PACS exports still pending long after their last try (their message was
    lost: the broker restarted, or was down when they were made); how many. A duplicate send
    is harmless: the row is skipped once sent, and the PACS gets the same instance UID."""
    late = timezone.now() - dt.timedelta(seconds=settings.CXR_RECONCILE_QUEUED_AFTER_S + 3600)
    ids = list(
        PacsExport.objects.filter(status=PacsExport.Status.PENDING)
        .annotate(last=Coalesce("last_attempt_at", "created_at"))
        .filter(last__lt=late)
        .values_list("pk", flat=True)[:500]
    )
    for pk in ids:
        send(SEND_TO_PACS, pk)
    return len(ids)


def webhook_enqueue_on_commit(delivery_id: int) -> None:
    """Send the webhook delivery task once the current transaction commits (robust: a broker
    that is down leaves the delivery pending, and the reconciler sends it later)."""
    transaction.on_commit(lambda: send(DELIVER_WEBHOOK, delivery_id), robust=True)


def webhooks_reconcile(now: dt.datetime | None = None) -> int:
    """Send again the pending webhook deliveries whose message was lost: due (next_attempt_at)
    for longer than CXR_RECONCILE_QUEUED_AFTER_S. Safe to repeat: the delivery task claims its
    row, so a duplicate message sends nothing. How many were sent again."""
    now = now or timezone.now()
    lost_before = now - dt.timedelta(seconds=settings.CXR_RECONCILE_QUEUED_AFTER_S)
    resent = 0
    for pk in WebhookDelivery.objects.filter(
        status=WebhookDelivery.Status.PENDING, next_attempt_at__lt=lost_before
    ).values_list("pk", flat=True):
        # Due again now (not counted as an attempt), so the next run does not send it twice.
        if WebhookDelivery.objects.filter(
            pk=pk, status=WebhookDelivery.Status.PENDING, next_attempt_at__lt=lost_before
        ).update(next_attempt_at=now):
            send(DELIVER_WEBHOOK, pk)
            resent += 1
    return resent


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
    _reconcile_queued(now, counts)
    _reconcile_running(now, counts)
    _reconcile_exports(now, counts)
    if any(counts.values()):
        logger.warning("reconciler: %s", counts)
    return counts


def _reconcile_queued(now: dt.datetime, counts: dict[str, int]) -> None:
    """Queued predictions whose message was lost: send again, or fail after too many sends."""
    queued_before = now - dt.timedelta(seconds=settings.CXR_RECONCILE_QUEUED_AFTER_S)
    lost = (
        Prediction.objects.filter(status=Prediction.Status.QUEUED, model_version__isnull=False)
        .annotate(last=Coalesce("last_dispatched_at", "queued_at"))
        .filter(last__lt=queued_before)
    )
    for p in lost.only("pk", "dispatches"):
        _fail_or_send_again(
            p.pk,
            counts,
            now=now,
            give_up=p.dispatches >= settings.CXR_PREDICTION_MAX_DISPATCHES,
            still=Prediction.objects.filter(pk=p.pk, status=Prediction.Status.QUEUED),
            error=(
                f"Sent to the workers {p.dispatches} times without being analysed: are "
                "the inference workers running? Re-run it once they are."
            ),
        )


def _reconcile_exports(now: dt.datetime, counts: dict[str, int]) -> None:
    """De-identified exports still queued after CXR_RECONCILE_QUEUED_AFTER_S: their message was
    lost; send it again (only a queued export is claimed, so a duplicate does nothing)."""
    from diagnosis.export_models import DatasetExport

    before = now - dt.timedelta(seconds=settings.CXR_RECONCILE_QUEUED_AFTER_S)
    for pk in DatasetExport.objects.filter(
        status=DatasetExport.Status.QUEUED, created_at__lt=before
    ).values_list("pk", flat=True):
        send(RUN_DATASET_EXPORT, pk)
        counts["redispatched"] += 1


def _reconcile_running(now: dt.datetime, counts: dict[str, int]) -> None:
    """Running predictions whose worker died: send again (the claim takes them over), or fail
    them once their attempts are spent."""
    stale_before = now - dt.timedelta(seconds=settings.CXR_PREDICTION_STALE_AFTER_S)
    for p in Prediction.objects.filter(status=Prediction.Status.RUNNING).only(
        "pk", "worker", "started_at", "attempts"
    ):
        if p.started_at and p.started_at >= stale_before and not process_is_dead(p.worker):
            continue
        # A claim beyond the limit only marks the row failed, never runs the model: if its
        # process died in between, it does not count as an attempt at the image.
        tried = min(p.attempts, settings.CXR_PREDICTION_MAX_ATTEMPTS)
        _fail_or_send_again(
            p.pk,
            counts,
            now=now,
            give_up=p.attempts >= settings.CXR_PREDICTION_MAX_ATTEMPTS,
            still=Prediction.objects.filter(
                pk=p.pk, status=Prediction.Status.RUNNING, worker=p.worker
            ),
            error=(
                f"Gave up after {tried} attempts: the worker stopped while "
                "analysing this image each time."
            ),
        )


def _fail_or_send_again(
    pk: int,
    counts: dict[str, int],
    *,
    now: dt.datetime,
    give_up: bool,
    still: QuerySet,
    error: str,
) -> None:
    """Fail the prediction with `error` when `give_up` (only while `still` matches its row:
    nobody took it meanwhile), or send it to the workers again; count which in `counts`."""
    if give_up:
        if still.update(status=Prediction.Status.FAILED, finished_at=now, error=error):
            counts["failed"] += 1
        return
    prediction_dispatch(pk)
    counts["redispatched"] += 1
