"""The promotion rule's facts: a version's internal test and its external evaluations.

Internal: the test split of the dataset the version was trained on (its training run's test
metrics; an imported version has none). External: a done evaluation on other data, meaning a
different Dataset row whose folder is not the training folder (nor inside it, nor around it) and
which shares no image (by sha256) with it, so a dataset registered twice under two names, or a
copy of its folder, is the same data. Promotion needs at least one external evaluation, or an
override reason (training.services.registry.model_version_promote).

Reads only, torch-free: the pages and the promote service share it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from training.models import Dataset, Evaluation, ModelVersion, TrainingRun

# The figures a snapshot keeps of each external evaluation (the promotion row and the audit).
SNAPSHOT_METRICS = ("n", "accuracy", "balanced_accuracy", "macro_auc", "ece")


@dataclass(frozen=True)
class InternalTest:
    """The test split of the training dataset, as the training run measured it."""

    dataset: Dataset | None
    metrics: dict[str, Any]
    grouped: bool | None  # were the dataset's splits grouped by patient (None: not known)


@dataclass(frozen=True)
class CheckedEvaluation:
    """A done evaluation and whether it counts as external (``same_data`` says why not)."""

    evaluation: Evaluation
    same_data: str = ""

    @property
    def external(self) -> bool:
        return not self.same_data


@dataclass(frozen=True)
class VersionValidation:
    version: ModelVersion
    internal: InternalTest | None
    evaluations: list[CheckedEvaluation] = field(default_factory=list)

    @property
    def external(self) -> list[Evaluation]:
        """The done external evaluations, newest first."""
        return [c.evaluation for c in self.evaluations if c.external]

    @property
    def validated(self) -> bool:
        return bool(self.external)

    @property
    def headline(self) -> Evaluation | None:
        """The external evaluation the pages lead with: the one with the most images (the most
        precise figure), the newest of equals; None without one (the pages then lead with the
        internal test, labelled as such)."""
        external = self.external
        if not external:
            return None
        return max(external, key=lambda e: (int(e.metrics.get("n") or 0), e.created_at))

    def snapshot(self) -> list[dict[str, Any]]:
        """What the external evaluations were at this moment, for the promotion row and the
        audit trail (the figures, not just ids: an evaluation row may change later)."""
        return [
            {
                "evaluation": e.pk,
                "dataset": e.dataset.name,
                "split": e.split,
                **{key: e.metrics.get(key) for key in SNAPSHOT_METRICS},
            }
            for e in self.external
        ]


def version_validation(*, version: ModelVersion) -> VersionValidation:
    """The version's internal test and its done evaluations, each checked for being external."""
    return versions_validation(versions=[version])[version.pk]


def versions_validation(*, versions: Iterable[ModelVersion]) -> dict[int, VersionValidation]:
    """`version_validation` for many versions in a fixed number of queries (the versions list)."""
    versions = list(versions)
    training = _training_datasets(versions)
    done = list(
        Evaluation.objects.filter(
            model_version__in=[v.pk for v in versions], status=Evaluation.Status.DONE
        )
        .select_related("dataset")
        .defer("curves", "dataset__scan", "dataset__group_csv")
        .order_by("-created_at")
    )
    dataset_ids = {e.dataset_id for e in done} | {d.pk for d in training.values() if d is not None}
    hashes = {
        pk: set(sha or [])
        for pk, sha in Dataset.objects.filter(pk__in=dataset_ids).values_list("pk", "scan__sha256")
    }
    result = {}
    for version in versions:
        train_set = training[version.pk]
        checked = [
            CheckedEvaluation(e, same_data(train_set, e.dataset, hashes) if train_set else "")
            for e in done
            if e.model_version_id == version.pk
        ]
        result[version.pk] = VersionValidation(version, _internal(version, train_set), checked)
    return result


def dataset_same_data(*, version: ModelVersion, dataset: Dataset) -> str:
    """Why `dataset` is `version`'s training data again ("" when it is other data, as for any
    dataset of an imported version: its training data is not known here)."""
    train_set = _training_datasets([version])[version.pk]
    if train_set is None:
        return ""
    hashes = {
        pk: set(sha or [])
        for pk, sha in Dataset.objects.filter(pk__in={train_set.pk, dataset.pk}).values_list(
            "pk", "scan__sha256"
        )
    }
    return same_data(train_set, dataset, hashes)


def same_data(training: Dataset, other: Dataset, hashes: dict[int, set[str]]) -> str:
    """Why `other` is the training data again ("" when it is other data)."""
    if other.pk == training.pk:
        return "the training dataset"
    a, b = _folder(training.root), _folder(other.root)
    if a == b:
        return f"the training dataset's folder ({training.name})"
    if a.startswith(b + os.sep) or b.startswith(a + os.sep):
        return f"a folder inside or around the training dataset's ({training.name})"
    shared = len(hashes.get(training.pk, set()) & hashes.get(other.pk, set()))
    if shared:
        return f"{shared} image(s) also in the training dataset {training.name}"
    return ""


def _folder(root: str) -> str:
    return os.path.realpath(os.path.expanduser(root or "")).rstrip(os.sep)


def _training_datasets(versions: list[ModelVersion]) -> dict[int, Dataset | None]:
    """Each version's training dataset (None when imported), in two queries."""
    run_dataset = dict(
        TrainingRun.objects.filter(
            pk__in=[v.training_run_id for v in versions if v.training_run_id]
        ).values_list("pk", "dataset_id")
    )
    datasets = Dataset.objects.defer("scan", "group_csv").in_bulk(set(run_dataset.values()))
    return {v.pk: datasets.get(run_dataset.get(v.training_run_id or 0, 0)) for v in versions}


def _internal(version: ModelVersion, dataset: Dataset | None) -> InternalTest | None:
    if version.training_run_id is None and not version.metrics:
        return None  # imported: no test split of ours
    return InternalTest(
        dataset=dataset,
        metrics=dict(version.metrics or {}),
        grouped=bool(dataset.grouping) if dataset is not None else None,
    )
