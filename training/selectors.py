"""Reads of the training pages, with the joins they need (no N+1 queries). Torch-free."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.db.models import Q, QuerySet

from training.models import (
    Dataset,
    Evaluation,
    ModelCalibration,
    ModelPromotion,
    ModelVersion,
    TrainingRun,
)

ACTIVE_RUN = (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
ACTIVE_EVALUATION = (Evaluation.Status.QUEUED, Evaluation.Status.RUNNING)


def production_version() -> ModelVersion | None:
    return (
        ModelVersion.objects.select_related("promoted_by", "training_run")
        .filter(status=ModelVersion.Status.PRODUCTION)
        .first()
    )


def version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("promoted_by", "created_by", "training_run")


def candidate_versions() -> QuerySet[ModelVersion]:
    return version_list().filter(status=ModelVersion.Status.CANDIDATE)


def version_detail(pk: int) -> ModelVersion:
    return version_list().select_related("training_run__dataset").get(pk=pk)


def version_evaluations(version: ModelVersion) -> QuerySet[Evaluation]:
    return (
        Evaluation.objects.filter(model_version=version)
        .select_related("dataset", "created_by")
        .defer("curves", "dataset__scan")
    )


def version_promotions(version: ModelVersion) -> QuerySet[ModelPromotion]:
    """The production changes this version took part in: put in, or replaced."""
    return ModelPromotion.objects.filter(
        Q(model_version=version) | Q(previous_version=version)
    ).select_related("model_version", "previous_version", "promoted_by")


def promotion_history(limit: int = 20) -> QuerySet[ModelPromotion]:
    return ModelPromotion.objects.select_related(
        "model_version", "previous_version", "promoted_by"
    )[:limit]


def run_list() -> QuerySet[TrainingRun]:
    # The reverse one-to-one (the candidate version a run made) joins in the same query.
    return TrainingRun.objects.select_related("dataset", "created_by", "model_version").defer(
        "history", "dataset__scan", "dataset__split"
    )


def run_detail(pk: int) -> TrainingRun:
    return (
        TrainingRun.objects.select_related("dataset", "created_by", "model_version")
        .defer("dataset__scan")
        .get(pk=pk)
    )


def run_version(run: TrainingRun) -> ModelVersion | None:
    """The candidate version a finished run registered, if any."""
    try:
        return run.model_version
    except ModelVersion.DoesNotExist:
        return None


def dataset_list() -> QuerySet[Dataset]:
    # The scan (every sample path and hash) and the groups CSV (a row per image) are the heavy
    # columns; the list does not need them.
    return Dataset.objects.select_related("created_by").defer("scan", "group_csv")


def dataset_detail(pk: int) -> Dataset:
    return Dataset.objects.select_related("created_by").get(pk=pk)


def dataset_class_table(dataset: Dataset) -> list[dict[str, Any]]:
    """Per class: the images found, and how many of them each split holds."""
    samples = (dataset.scan or {}).get("samples") or []
    split = dataset.split or {}
    per_split: dict[str, Counter] = {}
    for name in ("train", "val", "test"):
        counts: Counter = Counter()
        for index in split.get(name, []):
            if 0 <= index < len(samples):
                counts[int(samples[index][1])] += 1
        per_split[name] = counts
    rows = []
    for i, name in enumerate(dataset.classes or []):
        rows.append(
            {
                "name": name,
                "total": (dataset.class_counts or {}).get(name, 0),
                "train": per_split["train"][i],
                "val": per_split["val"][i],
                "test": per_split["test"][i],
            }
        )
    return rows


def latest_evaluation(
    version: ModelVersion, dataset: Dataset, split: str = "test"
) -> Evaluation | None:
    """The newest evaluation of a version on a dataset's split: a finished one if any, else the
    newest queued or running one, else the newest failed one."""
    evaluations = Evaluation.objects.filter(model_version=version, dataset=dataset, split=split)
    for statuses in ((Evaluation.Status.DONE,), ACTIVE_EVALUATION, (Evaluation.Status.FAILED,)):
        found = evaluations.filter(status__in=statuses).order_by("-created_at").first()
        if found is not None:
            return found
    return None


def evaluation_data(evaluation: Evaluation) -> dict[str, Any]:
    """A done evaluation as one JSON-ready object: what was evaluated, then its stored metrics
    (``n``, ``accuracy``, ``balanced_accuracy``, ``macro_auc``, ``ece``, ``per_class`` with each
    class's ``sensitivity``, ``specificity`` and ``auc``, ...).

    ``ood`` is ``{"flagged_share", "flagged", "n", "threshold", "percentile", "median_score",
    "method"}`` when the version has an out-of-distribution reference, else None.
    """
    return {
        "evaluation": evaluation.pk,
        "version": evaluation.model_version.name,
        "dataset": evaluation.dataset.name,
        "split": evaluation.split,
        **evaluation.metrics,
        "ood": evaluation.metrics.get("ood"),
    }


def version_calibrations(version: ModelVersion) -> QuerySet[ModelCalibration]:
    """A version's calibrations, newest first, with what the page shows of each."""
    return version.calibrations.select_related("dataset", "created_by", "version").defer(
        "dataset__scan", "dataset__split"
    )
