"""Celery tasks of the training app, on the `training` queue. Thin: ids in, services work."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings


@shared_task(acks_late=True, ignore_result=True)
def scan_dataset(dataset_id: int) -> None:
    from training.services import dataset_scan

    dataset_scan(dataset_id=dataset_id)


# Not acks_late: a training run is long; if its worker dies, the run is marked failed by the
# reconciler (no heartbeat) instead of being silently restarted from scratch.
@shared_task(ignore_result=True, time_limit=settings.CXR_TRAINING_TIME_LIMIT,
             soft_time_limit=settings.CXR_TRAINING_TIME_LIMIT - 60)
def run_training(run_id: int) -> None:
    from training.services import training_run_execute

    training_run_execute(run_id=run_id)


@shared_task(acks_late=True, ignore_result=True)
def run_evaluation(evaluation_id: int, skip_unknown: bool = False) -> None:
    from training.services import evaluation_execute

    evaluation_execute(evaluation_id=evaluation_id, skip_unknown=skip_unknown)


@shared_task(ignore_result=True)
def reconcile_training_runs() -> int:
    from training.services import training_runs_reconcile

    return training_runs_reconcile()
