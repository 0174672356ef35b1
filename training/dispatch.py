"""Dispatch of the training app: the tasks the web side and the commands hand to the
`training` queue, sent by name once the current transaction commits.

Never imports training.tasks (the consumer): the names below are the tasks' names
(tests/test_celery.py checks that they agree), and CELERY_TASK_ROUTES picks their queue.
"""

from __future__ import annotations

from celery import current_app
from django.db import transaction

SCAN_DATASET = "training.tasks.scan_dataset"
RUN_TRAINING = "training.tasks.run_training"
RUN_EVALUATION = "training.tasks.run_evaluation"
RECONCILE_TRAINING_RUNS = "training.tasks.reconcile_training_runs"
RUN_CALIBRATION = "training.tasks.run_calibration"
TASK_NAMES = (SCAN_DATASET, RUN_TRAINING, RUN_EVALUATION, RECONCILE_TRAINING_RUNS, RUN_CALIBRATION)


def _send_on_commit(name: str, *args: object, **kwargs: object) -> None:
    """Send task `name` after the commit (robust: a broker that is down does not undo the
    row; it stays queued)."""
    transaction.on_commit(
        lambda: current_app.send_task(name, args=args, kwargs=kwargs or None), robust=True
    )


def dataset_scan_enqueue_on_commit(dataset_id: int) -> None:
    _send_on_commit(SCAN_DATASET, dataset_id)


def training_run_enqueue_on_commit(run_id: int) -> None:
    _send_on_commit(RUN_TRAINING, run_id)


def evaluation_enqueue_on_commit(evaluation_id: int, *, skip_unknown: bool = False) -> None:
    _send_on_commit(RUN_EVALUATION, evaluation_id, skip_unknown=skip_unknown)


def calibration_enqueue_on_commit(calibration_id: int) -> None:
    _send_on_commit(RUN_CALIBRATION, calibration_id)
