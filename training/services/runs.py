"""Training runs: create (web or command), execute (a worker on the `training` queue, or the
command in the foreground), cancel, and notice runs whose worker died."""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from cxrweb.processes import process_identity, process_is_dead
from training.dispatch import training_run_enqueue_on_commit
from training.models import Dataset, ModelVersion, TrainingRun
from training.services.calibrations import calibration_initial_create
from training.services.datasets import DatasetRejected, dataset_folder
from training.services.plots import save_result_plots

logger = logging.getLogger(__name__)


class TrainingRejected(ValueError):
    """The run cannot start as asked; the message says why."""


def training_run_create(
    *, dataset: Dataset, config: dict, created_by=None, enqueue: bool = True
) -> TrainingRun:
    """Validate the configuration and create a queued run (sent to the training queue)."""
    # Torch-free on purpose: the web process starts runs.
    from training.ml.errors import MLError
    from training.ml.train.config import TrainConfig

    if dataset.status != Dataset.Status.READY:
        raise TrainingRejected(f"Dataset {dataset.name} is not ready ({dataset.status}).")
    try:
        cfg = TrainConfig.from_dict(config)
    except (MLError, TypeError, ValueError) as exc:
        raise TrainingRejected(str(exc)) from exc
    if cfg.weights is not None and cfg.weights != "imagenet":
        _check_weights_file(cfg.weights)
    run = TrainingRun.objects.create(
        dataset=dataset,
        architecture=cfg.arch,
        strategy=cfg.strategy,
        weights=cfg.weights or "none",
        config=cfg.to_dict(),
        created_by=created_by,
    )
    if enqueue:
        training_run_enqueue_on_commit(run.pk)
    return run


def _check_weights_file(path: str) -> None:
    """A backbone weights file must lie under CXR_WEIGHTS_ROOTS: the web form takes a path on the
    server, and neither its answer nor the worker's loading may reach any other file."""
    from training.services.datasets import path_under_roots

    if path_under_roots(path, settings.CXR_WEIGHTS_ROOTS) is None:
        raise TrainingRejected(
            "Backbone weights files are read only from the folders this server is configured "
            "with (CXR_WEIGHTS_ROOTS): ask its administrator to put the file there."
        )
    if not Path(path).is_file():
        raise TrainingRejected(
            f"The weights file {path} does not exist (on this machine). Give the path as the "
            "training workers see it, or use imagenet or none."
        )


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """Ask the run to stop: a queued run is cancelled now, a running one within a batch."""
    TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    )
    TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(
        cancel_requested=True
    )
    run.refresh_from_db()
    return run


def _claim(run_id: int) -> TrainingRun | None:
    now = timezone.now()
    if (
        TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
            status=TrainingRun.Status.RUNNING,
            started_at=now,
            heartbeat_at=now,
            worker=process_identity(),
            error="",
        )
        != 1
    ):
        return None
    return TrainingRun.objects.select_related("dataset").get(pk=run_id)


def training_run_execute(
    *, run_id: int, on_progress: Callable[[dict], None] | None = None
) -> TrainingRun | None:
    """Train, calibrate, test and register the result as a candidate model version.

    Idempotent: only a queued run is claimed. Progress (epoch, step, loss, ETA) and a heartbeat
    are written to the row about every second; cancellation is polled every step.
    """
    from training.ml.errors import MLError
    from training.ml.train.config import TrainConfig
    from training.ml.train.fit import fit
    from training.ml.train.scan import FolderScan

    run = _claim(run_id)
    if run is None:
        return None
    dataset = run.dataset
    cfg = TrainConfig.from_dict(run.config)
    last_write = [0.0]
    last_cancel_check = [0.0, False]

    def progress(p: dict) -> None:
        if on_progress is not None:
            on_progress(p)
        now = time.monotonic()
        if now - last_write[0] < 1.0 and p.get("step") != p.get("steps"):
            return
        last_write[0] = now
        TrainingRun.objects.filter(pk=run.pk).update(progress=p, heartbeat_at=timezone.now())

    def should_stop() -> bool:
        now = time.monotonic()
        if now - last_cancel_check[0] >= 0.25:
            last_cancel_check[0] = now
            last_cancel_check[1] = TrainingRun.objects.filter(
                pk=run.pk, cancel_requested=True
            ).exists()
        return bool(last_cancel_check[1])

    try:
        root = dataset_folder(dataset)
    except DatasetRejected as exc:
        return _fail(run, str(exc))
    with tempfile.TemporaryDirectory(prefix=f"cxr-run-{run.pk}-") as tmp:
        checkpoint = Path(tmp) / "best.pt"
        try:
            result = fit(
                cfg,
                root,
                FolderScan.from_dict(dataset.scan),
                dataset.split,
                checkpoint_path=checkpoint,
                classes=dataset.classes,
                progress_callback=progress,
                should_stop=should_stop,
                ood_percentile=settings.CXR_OOD_PERCENTILE,
            )
        except MLError as exc:
            return _fail(run, str(exc))
        except Exception as exc:  # noqa: BLE001 - the run's row must say what happened
            logger.exception("training run %s failed", run.pk)
            return _fail(run, f"{type(exc).__name__}: {exc}")
        return _finish(run, result)


def _finish(run: TrainingRun, result) -> TrainingRun:
    from training.ml.models.checkpoint import file_sha256

    run.refresh_from_db()  # progress and heartbeat were written meanwhile
    data = result.to_dict()
    run.history = result.history
    run.result = data
    plot_fields = save_result_plots(
        run,
        metrics=result.test_metrics,
        curves=result.test_curves,
        prefix=f"run-{run.pk}",
        history=result.history,
        best_epoch=result.best_epoch,
    )
    run.status = TrainingRun.Status.CANCELLED if result.cancelled else TrainingRun.Status.DONE
    run.finished_at = timezone.now()
    with transaction.atomic():
        if result.checkpoint_path and Path(result.checkpoint_path).is_file():
            prep = result.preprocessing or {}
            version = ModelVersion(
                name=f"{run.architecture}-{run.strategy}-run{run.pk}",
                architecture=run.architecture,
                class_labels=list(result.classes),
                input_size=prep.get("input_size", 224),
                mean=list(prep.get("mean", (0.485, 0.456, 0.406))),
                std=list(prep.get("std", (0.229, 0.224, 0.225))),
                temperature=result.temperature,
                thresholds=result.thresholds or {},
                normal_classes=ModelVersion.default_normal_classes(result.classes),
                sha256=file_sha256(result.checkpoint_path),
                metrics=result.test_metrics or {},
                source=f"training run {run.pk} on dataset {run.dataset.name}",
                notes=(result.strategy_summary or "")[:2000],
                created_by=run.created_by,
                training_run=run,
            )
            with open(result.checkpoint_path, "rb") as fh:
                version.weights.save(
                    f"{version.name}-{version.sha256[:12]}.pt", File(fh), save=False
                )
            _attach_ood_reference(version, result)
            version.save()
            calibration_initial_create(version=version)
        run.save(update_fields=["history", "result", "status", "finished_at", *plot_fields])
    logger.info("training run %s %s", run.pk, run.status)
    return run


def _attach_ood_reference(version: ModelVersion, result) -> None:
    """Store the run's OOD reference (written beside the checkpoint) on the new version."""
    path = getattr(result, "ood_path", None)
    if not path or not Path(path).is_file():
        return
    with open(path, "rb") as fh:
        version.ood_reference.save(
            f"{version.name}-{version.sha256[:12]}.ood.npz", File(fh), save=False
        )
    version.ood_summary = dict(result.ood_summary or {})


def _fail(run: TrainingRun, message: str) -> TrainingRun:
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.FAILED, error=message[:4000], finished_at=timezone.now()
    )
    run.refresh_from_db()
    return run


def training_runs_reconcile() -> int:
    """A run whose worker stopped (no heartbeat for CXR_TRAINING_STALE_AFTER_S, or its process on
    this host is gone) is marked failed, so it never stays "running" forever."""
    now = timezone.now()
    stale_before = now - dt.timedelta(seconds=settings.CXR_TRAINING_STALE_AFTER_S)
    failed = 0
    for run in TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING):
        dead = process_is_dead(run.worker)
        if dead or (run.heartbeat_at and run.heartbeat_at < stale_before):
            failed += TrainingRun.objects.filter(
                pk=run.pk, status=TrainingRun.Status.RUNNING, worker=run.worker
            ).update(
                status=TrainingRun.Status.FAILED,
                finished_at=now,
                error="The worker running this training stopped (restarted or killed). "
                "Start the run again.",
            )
    return failed
