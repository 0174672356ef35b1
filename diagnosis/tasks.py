"""Celery tasks of the diagnosis app: thin, ids in, the service does the work.

This module is imported by the web process (to send tasks), so it must not import torch.
"""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_process_init
from django.db import DatabaseError


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    max_retries=5,
)
def run_prediction(self, prediction_id: int) -> str:
    from diagnosis.services import prediction_run

    prediction = prediction_run(prediction_id=prediction_id)
    return prediction.status if prediction is not None else "skipped"


@shared_task(ignore_result=True)
def reconcile_predictions() -> dict:
    """Periodic (Celery beat): re-send lost predictions, fail those that cannot finish."""
    from diagnosis.services import predictions_reconcile

    return predictions_reconcile()


@shared_task(bind=True, acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=True,
             max_retries=5)
def run_class_heatmap(self, heatmap_id: int) -> str:
    from diagnosis.services import class_heatmap_run

    heatmap = class_heatmap_run(heatmap_id=heatmap_id)
    return heatmap.status if heatmap is not None else "skipped"


@worker_process_init.connect
def _init_worker_process(**kwargs) -> None:
    """Runs in each pool child after the fork. Nothing heavy here: a child must report "up"
    within worker_proc_alive_timeout, and importing torch takes seconds on a small machine.
    Torch is imported, and its threads pinned, on the child's first model load instead."""
    import os

    from celery import current_app

    os.environ.setdefault("CXR_WORKER_CONCURRENCY", str(current_app.conf.worker_concurrency or 1))
