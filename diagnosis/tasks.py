"""Celery tasks of the diagnosis app: thin, ids in, the service does the work.

This module is imported by the web process (to send tasks), so it must not import torch.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import celeryd_init
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


@celeryd_init.connect
def _configure_worker(sender=None, instance=None, conf=None, options=None, **kwargs) -> None:
    """In the worker's main process, before the pool forks (the children inherit both):

    - record how many pool processes share this host's cores, so each child pins torch to its
      share (app.conf.worker_concurrency is None when --concurrency comes from the command line);
    - lower the worker's CPU priority (CXR_WORKER_NICE), so the web server sharing the host
      answers uploads first and the workers take the rest of the CPU.
    """
    import os

    from django.conf import settings

    log = logging.getLogger(__name__)
    concurrency = (options or {}).get("concurrency") or os.cpu_count() or 1
    os.environ.setdefault("CXR_WORKER_CONCURRENCY", str(concurrency))
    log.info("pool processes on this worker: %s", concurrency)
    if settings.CXR_WORKER_NICE:
        try:
            log.info("worker CPU priority: nice %d", os.nice(settings.CXR_WORKER_NICE))
        except OSError as exc:
            log.warning("could not lower the worker's CPU priority: %s", exc)
