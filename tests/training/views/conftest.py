"""Fixtures and data of the training pages' tests: one test module per module of training/views/.

Rows are created directly in the database (a dataset with a small scan and split, runs in every
status, evaluations with real metrics from training.ml.train.metrics); the broker is the boundary,
so the tasks sent are recorded instead (the sent_tasks fixture) where a form queues work. The data
builders are also used by the browser and security tests.
"""

from __future__ import annotations

import numpy as np
import pytest
from django.utils import timezone

from tests.conftest import CLASSES
from training.models import Dataset, Evaluation, ModelVersion, TrainingRun


@pytest.fixture(autouse=True)
def _dataset_roots(settings, tmp_path):
    """Folders registered here are made under tmp_path (CXR_DATASET_ROOTS)."""
    settings.CXR_DATASET_ROOTS = [tmp_path]


def sent_ids(sent_tasks, name: str):
    """The ids sent so far as task `name`, when called; any other task sent fails the test."""

    def ids() -> list[int]:
        assert all(t.name == name and len(t.args) == 1 for t in sent_tasks), sent_tasks
        return [t.args[0] for t in sent_tasks]

    return ids


# --------------------------------------------------------------------------------------------------
# Data made the way the services make it (also used by the browser and security tests)
# --------------------------------------------------------------------------------------------------


def make_metrics(
    classes=CLASSES,
    *,
    n: int = 80,
    skill: float = 2.0,
    seed: int = 0,
    thresholds: dict | None = None,
) -> tuple[dict, dict]:
    """Real classification_report figures (and ROC / reliability curves) of a fake model."""
    from training.ml.train.calibration import reliability_bins
    from training.ml.train.metrics import classification_report, roc_curves

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(classes)
    logits = rng.normal(size=(n, len(classes)))
    logits[np.arange(n), labels] += skill
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    thresholds = thresholds or {c: 0.4 for c in classes}
    metrics = classification_report(labels, probs, classes, thresholds=thresholds)
    metrics.update(
        temperature=1.3, ece_uncalibrated=metrics["ece"] + 0.05, ece_calibrated=metrics["ece"]
    )
    curves = {
        "roc": roc_curves(labels, probs, classes),
        "reliability": reliability_bins(probs, labels),
    }
    return metrics, curves


def make_dataset(
    name: str = "kermany",
    *,
    status: str = Dataset.Status.READY,
    root: str = "/data/x",
    classes=CLASSES,
    per_class: int = 10,
) -> Dataset:
    if status != Dataset.Status.READY:
        return Dataset.objects.create(
            name=name,
            root=root,
            status=status,
            error="No class folders in /data/x." if status == Dataset.Status.FAILED else "",
        )
    samples = [[f"{c}/img{i:03d}.png", k] for k, c in enumerate(classes) for i in range(per_class)]
    split: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for index in range(len(samples)):
        split[("train", "train", "train", "val", "test")[index % 5]].append(index)
    unreadable = [
        ["normal/broken.png", "The file is truncated."],
        ["covid19/notes.png", "Not a PNG, JPEG or DICOM file."],
    ]
    return Dataset.objects.create(
        name=name,
        root=root,
        status=status,
        classes=list(classes),
        class_counts={c: per_class for c in classes},
        scan={
            "root": root,
            "classes": list(classes),
            "samples": samples,
            "class_counts": {c: per_class for c in classes},
            "unreadable": unreadable,
            "skipped": ["README.txt"],
            "formats": {"PNG": len(samples)},
            "sha256": [],
            "verified": True,
        },
        unreadable=unreadable,
        split=split,
        split_seed=7,
    )


HISTORY = [
    {
        "epoch": e,
        "phase": "head",
        "train_loss": 1.2 / e,
        "train_acc": 0.5 + e / 20,
        "val_loss": 1.1 / e + (0.2 if e == 4 else 0),
        "val_acc": 0.45 + e / 20,
        "lr": 1e-3,
        "seconds": 12.5,
        "images_per_s": 180.0,
        "val_images_per_s": 400.0,
        "train_images": 640,
    }
    for e in range(1, 5)
]


def make_run(dataset: Dataset, status: str, *, user=None, plots: bool = False) -> TrainingRun:
    now = timezone.now()
    config = {
        "arch": "resnet18",
        "weights": "imagenet",
        "strategy": "head",
        "epochs": 10,
        "batch_size": 16,
        "lr": None,
        "hflip": False,
        "early_stopping_patience": 3,
    }
    run = TrainingRun(
        dataset=dataset,
        architecture="resnet18",
        strategy="head",
        weights="imagenet",
        config=config,
        status=status,
        created_by=user,
    )
    if status != TrainingRun.Status.QUEUED:
        run.started_at = now - timezone.timedelta(minutes=12)
        run.worker = "gpu-host-1:4242"
    if status == TrainingRun.Status.RUNNING:
        run.progress = {
            "phase": "train",
            "epoch": 3,
            "epochs": 10,
            "step": 20,
            "steps": 40,
            "loss": 0.61234,
            "eta_s": 754.0,
            "images_per_s": 212.4,
        }
    if status == TrainingRun.Status.FAILED:
        run.error = "The validation loss is nan after epoch 2: training diverged."
        run.finished_at = now
    if status in (TrainingRun.Status.DONE, TrainingRun.Status.CANCELLED):
        metrics, curves = make_metrics(thresholds={c: 0.35 for c in CLASSES})
        run.history = HISTORY
        run.result = {
            "history": HISTORY,
            "best_epoch": 3,
            "test_metrics": metrics,
            "val_metrics": metrics,
            "temperature": 1.3,
            "thresholds": {c: 0.35 for c in CLASSES},
            "checkpoint_path": "/tmp/best.pt",
            "sha256": "ab" * 32,
            "stopped_early": True,
            "cancelled": status == TrainingRun.Status.CANCELLED,
            "backbone_report": "loaded 122 tensors from /weights/chexpert-resnet18.pt; "
            "missing 0 (left at random init); unexpected 2 (ignored)",
            "trainable_params": 2052,
            "total_params": 11178564,
            "classes": CLASSES,
            "strategy_summary": "head: 2,052 of 11,178,564 parameters trainable (0.0%); "
            "backbone blocks trained: none",
        }
        run.progress = {"phase": "test", "epoch": 3, "epochs": 10, "step": 5, "steps": 5}
        run.finished_at = now
        if plots:
            from training.services.plots import save_result_plots

            save_result_plots(
                run,
                metrics=metrics,
                curves=curves,
                prefix="run-test",
                history=HISTORY,
                best_epoch=3,
            )
    run.save()
    return run


def make_evaluation(
    version: ModelVersion,
    dataset: Dataset,
    *,
    status=Evaluation.Status.DONE,
    skill: float = 2.0,
    seed: int = 0,
    plots: bool = False,
) -> Evaluation:
    evaluation = Evaluation(model_version=version, dataset=dataset, split="test", status=status)
    if status == Evaluation.Status.DONE:
        metrics, curves = make_metrics(skill=skill, seed=seed)
        evaluation.metrics, evaluation.curves = metrics, curves
        evaluation.finished_at = timezone.now()
        if plots:
            from training.services.plots import save_result_plots

            save_result_plots(
                evaluation, metrics=metrics, curves=curves, prefix=f"eval-{version.pk}"
            )
    if status == Evaluation.Status.FAILED:
        evaluation.error = "The weights file of the version does not match its sha256."
    evaluation.save()
    return evaluation


def second_version(version: ModelVersion, name: str = "second-mobilenet", **extra) -> ModelVersion:
    """Another version with the same weights file (the pages do not load weights)."""
    return ModelVersion.objects.create(
        name=name,
        architecture=version.architecture,
        class_labels=version.class_labels,
        weights=version.weights.name,
        sha256=version.sha256,
        metrics=extra.pop("metrics", {}),
        **extra,
    )


@pytest.fixture
def dataset(db) -> Dataset:
    return make_dataset()


@pytest.fixture
def world(dataset, model_version, admin_user):
    """One of everything: datasets in each status, runs in each status, evaluations."""
    runs = {
        status: make_run(dataset, status, user=admin_user) for status in TrainingRun.Status.values
    }
    model_version.training_run = runs["done"]
    model_version.metrics = runs["done"].test_metrics
    model_version.save()
    evaluations = {
        status: make_evaluation(model_version, dataset, status=status)
        for status in Evaluation.Status.values
    }
    return {
        "dataset": dataset,
        "version": model_version,
        "runs": runs,
        "evaluations": evaluations,
        "scanning": make_dataset("still-scanning", status=Dataset.Status.SCANNING),
        "failed": make_dataset("broken", status=Dataset.Status.FAILED),
    }
