"""Celery tasks of the diagnosis app: thin, ids in, one worker function does the work.

Sent by name from diagnosis.dispatch (its constants are these tasks' names); found by Celery's
autodiscovery, imported by nothing else. Retries for transient (database) errors live here;
permanent errors become the row's `failed` status. The worker modules import torch, so they are
imported when a task runs, never when the web process loads this module.
"""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError

from diagnosis.worker import process  # noqa: F401 - connects the worker process's signal handlers


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    max_retries=5,
)
def run_prediction(self, prediction_id: int) -> str:
    from diagnosis.worker.run import prediction_run

    prediction = prediction_run(prediction_id=prediction_id)
    return prediction.status if prediction is not None else "skipped"


@shared_task(ignore_result=True)
def reconcile_predictions() -> dict:
    """Periodic (Celery beat): re-send lost predictions, fail those that cannot finish; make and
    re-send PACS exports and webhook deliveries whose message was lost."""
    from diagnosis.dispatch import pacs_exports_reconcile, predictions_reconcile, webhooks_reconcile
    from diagnosis.worker.pacs import pacs_exports_after_reconcile

    counts = predictions_reconcile()
    counts["pacs_made"] = pacs_exports_after_reconcile()
    counts["pacs_resent"] = pacs_exports_reconcile()
    counts["webhooks_resent"] = webhooks_reconcile()
    return counts


@shared_task(
    bind=True, acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=True, max_retries=5
)
def run_class_heatmap(self, heatmap_id: int) -> str:
    from diagnosis.worker.heatmaps import class_heatmap_run

    heatmap = class_heatmap_run(heatmap_id=heatmap_id)
    return heatmap.status if heatmap is not None else "skipped"


@shared_task(acks_late=True, ignore_result=True)
def run_dataset_export(export_id: int) -> None:
    """Write a de-identified export and register it as a dataset (routed to the training queue)."""
    from diagnosis.services.exports import dataset_export_run

    dataset_export_run(export_id=export_id)


@shared_task(
    bind=True, acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=True, max_retries=5
)
def send_to_pacs(self, export_id: int) -> str:
    """Send one DICOM object to the PACS; transient failures come back after a growing wait
    (the row counts the attempts and gives up after CXR_PACS_MAX_ATTEMPTS)."""
    from diagnosis.worker.pacs import PacsRetry, pacs_export_run

    try:
        export = pacs_export_run(export_id=export_id)
    except PacsRetry as retry:
        raise self.retry(countdown=retry.countdown, max_retries=None) from None
    return export.status if export is not None else "skipped"


@shared_task(
    bind=True, acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=True, max_retries=5
)
def deliver_webhook(self, delivery_id: int) -> str:
    """One attempt at a critical-finding webhook; tried again later (Celery's countdown, the
    attempts counted in the delivery's row) while the receiver is down or answers 5xx."""
    from diagnosis.worker.webhooks import webhook_deliver

    attempt = webhook_deliver(delivery_id=delivery_id)
    if attempt.retry_in is not None:
        raise self.retry(countdown=attempt.retry_in, max_retries=None)
    return attempt.outcome
