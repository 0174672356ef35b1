"""Claiming work: a prediction, and the companions of its micro-batch, with one conditional
UPDATE each (healthchecks' sendalerts pattern), so that no prediction is run twice at once."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from cxrweb.processes import process_identity, process_is_dead
from diagnosis.models import Prediction


def worker_identity(worker: str) -> str:
    """Who claims: the given worker name, or this process (host:pid), as the column holds it."""
    return (worker or process_identity())[:200]


def _claim_values(worker: str, now: dt.datetime) -> dict:
    """The UPDATE that makes a prediction this worker's: running since `now`, one attempt more."""
    return {
        "status": Prediction.Status.RUNNING,
        "started_at": now,
        "finished_at": None,
        "attempts": F("attempts") + 1,
        "worker": worker,
        "error": "",
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
    worker = worker_identity(worker)
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
    worker = worker_identity(worker)
    fresh = Prediction.objects.filter(
        status=Prediction.Status.QUEUED, attempts=0, model_version_id=prediction.model_version_id
    )
    candidates = fresh.exclude(pk=prediction.pk).order_by(*_BATCH_ORDER).values("pk")[:limit]
    now = prediction.started_at or timezone.now()  # one batch: one worker, one claim time
    if not fresh.filter(pk__in=candidates).update(**_claim_values(worker, now)):
        return []
    return list(
        Prediction.objects.select_related("image", "model_version")
        .filter(status=Prediction.Status.RUNNING, worker=worker, started_at=now)
        .exclude(pk=prediction.pk)
        .order_by(*_BATCH_ORDER)
    )
