"""Evaluations: a model version's metrics on a split of a registered dataset."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from django.utils import timezone

from cxrweb.responses import csv_cell
from training.dispatch import evaluation_enqueue_on_commit
from training.models import Dataset, Evaluation, ModelVersion
from training.services.datasets import DatasetRejected, dataset_folder
from training.services.plots import save_result_plots

if TYPE_CHECKING:
    from training.ml.train.evaluate import SamplePredictions

logger = logging.getLogger(__name__)

SPLITS = ("test", "val", "train", "all")


def evaluation_create(
    *,
    version: ModelVersion,
    dataset: Dataset,
    split: str = "test",
    created_by=None,
    enqueue: bool = True,
    skip_unknown: bool = False,
) -> Evaluation:
    """A queued evaluation; ``skip_unknown`` leaves out images of classes the model lacks (the
    worker is told so with the task, as the command passes it to ``evaluation_execute``)."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    if dataset.status != Dataset.Status.READY:
        raise ValueError(f"Dataset {dataset.name} is not ready ({dataset.status}).")
    evaluation = Evaluation.objects.create(
        model_version=version, dataset=dataset, split=split, created_by=created_by
    )
    if enqueue:
        evaluation_enqueue_on_commit(evaluation.pk, skip_unknown=skip_unknown)
    return evaluation


@dataclass(frozen=True)
class EvaluationResult:
    """A finished (done or failed) evaluation and, when it is done, what the model said about each
    image in that same pass."""

    evaluation: Evaluation
    predictions: SamplePredictions | None


def evaluation_execute(
    *, evaluation_id: int, progress=None, skip_unknown: bool = False
) -> Evaluation | None:
    """Evaluate on the stored split: the same images for every version (compare fairly)."""
    result = _evaluate(evaluation_id, progress=progress, skip_unknown=skip_unknown)
    return result.evaluation if result is not None else None


def evaluation_run(
    *, version: ModelVersion, dataset: Dataset, split: str = "test", skip_unknown: bool = False
) -> EvaluationResult:
    """Evaluate here and now (a command): the stored Evaluation and the per-image predictions
    its metrics were computed from."""
    evaluation = evaluation_create(
        version=version, dataset=dataset, split=split, enqueue=False, skip_unknown=skip_unknown
    )
    result = _evaluate(evaluation.pk, skip_unknown=skip_unknown)
    assert result is not None  # created queued just above: nothing else can have claimed it
    return result


def _evaluate(
    evaluation_id: int, *, progress=None, skip_unknown: bool = False
) -> EvaluationResult | None:
    from training.ml.errors import MLError
    from training.ml.models.checkpoint import file_sha256
    from training.ml.train.evaluate import evaluate_checkpoint

    if (
        Evaluation.objects.filter(pk=evaluation_id, status=Evaluation.Status.QUEUED).update(
            status=Evaluation.Status.RUNNING
        )
        != 1
    ):
        return None
    evaluation = Evaluation.objects.select_related("model_version", "dataset").get(pk=evaluation_id)
    version, dataset = evaluation.model_version, evaluation.dataset
    samples = [tuple(s) for s in dataset.scan["samples"]]
    indices = (
        list(range(len(samples)))
        if evaluation.split == "all"
        else list(dataset.split.get(evaluation.split, []))
    )
    # Dataset class names are matched to the model's case-insensitively ("Covid" is "COVID");
    # with skip_unknown, images of classes the model does not know are left out (and listed).
    by_fold = {c.casefold(): c for c in version.class_labels}
    dataset_classes = [by_fold.get(c.casefold(), c) for c in dataset.classes]
    unknown = [c for c in dataset_classes if c not in version.class_labels]
    if unknown and skip_unknown:
        keep = {i for i, c in enumerate(dataset_classes) if c in version.class_labels}
        indices = [i for i in indices if samples[i][1] in keep]
    try:
        path = version.weights.path
        if file_sha256(path) != version.sha256:
            raise MLError(f"The weights file of {version.name} does not match its sha256.")
        if unknown and skip_unknown:
            # evaluate_checkpoint refuses unknown classes: give those (now unused) labels a name
            # the model knows; no sample of theirs is in `indices`.
            dataset_classes = [
                c if c in version.class_labels else version.class_labels[0] for c in dataset_classes
            ]
        out = evaluate_checkpoint(
            path,
            dataset_folder(dataset),
            samples,
            indices,
            dataset_classes,
            progress=progress,
            ood_reference=_ood_reference(version),
        )
    except (MLError, FileNotFoundError, DatasetRejected) as exc:
        return EvaluationResult(_fail(evaluation, str(exc)), None)
    except Exception as exc:  # noqa: BLE001
        logger.exception("evaluation %s failed", evaluation.pk)
        return EvaluationResult(_fail(evaluation, f"{type(exc).__name__}: {exc}"), None)
    if out["metrics"] is None:
        return EvaluationResult(
            _fail(evaluation, "No image of that split could be evaluated."), None
        )
    evaluation.metrics = {**out["metrics"], "skipped_classes": unknown if skip_unknown else []}
    evaluation.curves = {"roc": out["roc"], "reliability": out["reliability"]}
    save_result_plots(
        evaluation, metrics=out["metrics"], curves=evaluation.curves, prefix=f"eval-{evaluation.pk}"
    )
    evaluation.status = Evaluation.Status.DONE
    evaluation.finished_at = timezone.now()
    evaluation.save()
    return EvaluationResult(evaluation, out["predictions"])


def _ood_reference(version: ModelVersion):
    """The version's OOD reference, or None when it has none; an unreadable one is an MLError
    (the evaluation fails saying so)."""
    from training.ml.ood import OODReference

    if not version.ood_reference:
        return None
    return OODReference.load(version.ood_reference.path)


#: The per-image CSV's columns before one probability column per class (the version's order).
#: ``ood_score`` and ``ood_flagged`` stay empty when the version has no OOD reference.
PREDICTION_COLUMNS = ("path", "true_label", "predicted_label", "ood_score", "ood_flagged")


def evaluation_predictions_write(predictions: SamplePredictions, out: TextIO) -> int:
    """Write one CSV row per evaluated image to ``out``; returns the number of rows.

    Paths come from file names and class names from the version, so every text cell goes
    through :func:`cxrweb.responses.csv_cell`: a name starting like a formula stays text.
    """
    writer = csv.writer(out)
    writer.writerow([csv_cell(c) for c in (*PREDICTION_COLUMNS, *predictions.classes)])
    names = predictions.classes
    n = len(predictions.paths)
    scores = predictions.ood_scores
    flagged = predictions.ood_flagged
    for i, (path, label, predicted, probs) in enumerate(
        zip(
            predictions.paths,
            predictions.labels,
            predictions.predicted,
            predictions.probabilities,
            strict=True,
        )
    ):
        ood = ["", ""]
        if scores is not None and flagged is not None and len(scores) == n:
            ood = [repr(float(scores[i])), "true" if flagged[i] else "false"]
        writer.writerow(
            [csv_cell(path), csv_cell(names[label]), csv_cell(names[predicted]), *ood]
            + [repr(float(p)) for p in probs]
        )
    return len(predictions.paths)


def _fail(evaluation: Evaluation, message: str) -> Evaluation:
    Evaluation.objects.filter(pk=evaluation.pk).update(
        status=Evaluation.Status.FAILED, error=message[:4000], finished_at=timezone.now()
    )
    evaluation.refresh_from_db()
    return evaluation
