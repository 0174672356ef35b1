"""Celery tasks of the training app, on the `training` queue. Thin: ids in, services work."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings


@shared_task(acks_late=True, ignore_result=True)
def scan_dataset(dataset_id: int) -> None:
    from training.services import dataset_scan

    dataset_scan(dataset_id=dataset_id)


@shared_task(
    ignore_result=True,
    acks_late=False,
    time_limit=settings.CXR_TRAINING_TIME_LIMIT,
    soft_time_limit=settings.CXR_TRAINING_TIME_LIMIT - 60,
)
def run_training(run_id: int) -> None:
    """Train one queued run (on the `training` queue, its own worker under `make run`).

    Acknowledged early (acks_late=False, overriding the global CELERY_TASK_ACKS_LATE): a run
    lasts up to CXR_TRAINING_TIME_LIMIT, far beyond the broker's visibility timeout, so a late
    ack would have Redis hand the message out again while the run goes on. Redelivery would be
    harmless (only a queued run is claimed, so a second copy does nothing) but pointless: if the
    worker dies mid-run, the stale-run reconciler marks the run failed (no heartbeat) instead of
    restarting hours of training from scratch. The one gap: a worker killed between the ack
    and the claim (milliseconds) leaves the run queued; cancel it and start it again.
    """
    from training.services import training_run_execute

    training_run_execute(run_id=run_id)


@shared_task(acks_late=True, ignore_result=True)
def run_evaluation(evaluation_id: int, skip_unknown: bool = False) -> None:
    from training.services import evaluation_execute

    evaluation_execute(evaluation_id=evaluation_id, skip_unknown=skip_unknown)


@shared_task(acks_late=True, ignore_result=True)
def run_calibration(calibration_id: int) -> None:
    from training.services import calibration_execute

    calibration_execute(calibration_id=calibration_id)


@shared_task(ignore_result=True)
def reconcile_training_runs() -> int:
    from training.services import training_runs_reconcile

    return training_runs_reconcile()
