"""Evaluate a saved model on part of a dataset (a candidate and the production model on the same
stored test split)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..models.checkpoint import build_for_inference, load_weights_file
from ..ood import OODReference
from ..preprocessing import Preprocessing
from .cache import DecodedImages
from .calibration import reliability_bins
from .config import ConfigError, ProgressCallback, StopCheck
from .gpu_augment import BatchAugment
from .loop import evaluate, resolve_device, with_calibration
from .metrics import classification_report, roc_curves
from .pipeline import DeviceBatches, place_model
from .scan import DatasetError
from .tta import TTAModel

__all__ = ["SamplePredictions", "evaluate_checkpoint", "ood_summary"]


@dataclass(frozen=True)
class SamplePredictions:
    """What the model said about each evaluated image, row by row in evaluation order: its path
    (relative to the dataset folder), its true class and the probabilities (at the evaluation's
    temperature), both in the model's class order."""

    classes: list[str]
    paths: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    #: Each image's OOD score and the reference's threshold, when the model has a reference.
    ood_scores: np.ndarray | None = None
    ood_threshold: float | None = None

    @property
    def predicted(self) -> np.ndarray:
        """The predicted class index of each image: the argmax, as the metrics count it."""
        return self.probabilities.argmax(axis=1)

    @property
    def ood_flagged(self) -> np.ndarray | None:
        """Whether each image's score is over the threshold (None without a reference)."""
        if self.ood_scores is None or self.ood_threshold is None:
            return None
        return self.ood_scores > self.ood_threshold


def ood_summary(scores: np.ndarray, reference: OODReference) -> dict[str, Any]:
    """What an evaluation reports about its images' OOD scores (JSON-able)."""
    return {
        "flagged_share": float((scores > reference.threshold).mean()) if len(scores) else None,
        "flagged": int((scores > reference.threshold).sum()),
        "n": int(len(scores)),
        "threshold": reference.threshold,
        "percentile": reference.percentile,
        "median_score": float(np.median(scores)) if len(scores) else None,
        "method": reference.method,
    }


def evaluate_checkpoint(
    checkpoint_path: str | os.PathLike[str],
    dataset_root: str | os.PathLike[str],
    samples: Sequence[tuple[str, int]],
    indices: Sequence[int],
    dataset_classes: Sequence[str],
    *,
    arch: str | None = None,
    model_classes: Sequence[str] | None = None,
    preprocessing: Preprocessing | None = None,
    temperature: float | None = None,
    thresholds: Mapping[str, float] | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    ood_reference: OODReference | None = None,
    tta: bool | None = None,
) -> dict[str, Any]:
    """Evaluate a saved model on ``indices`` of a dataset, e.g. a candidate and the production
    model on the same stored test split.

    Architecture, classes, preprocessing, temperature and thresholds come from the checkpoint's
    meta unless given (a plain state dict needs ``arch``, ``model_classes`` and
    ``preprocessing``). Dataset labels are matched to the model's classes by name, so a model and
    a dataset may list them in different orders; a dataset class the model lacks is an error.
    Returns ``{"metrics", "roc", "reliability", "output", "predictions"}`` (``output`` is an
    :class:`EvalOutput`, ``predictions`` the :class:`SamplePredictions` of the same pass). With
    an ``ood_reference`` every image is scored from the same forward pass, and ``metrics["ood"]``
    says how many are over its threshold (:func:`ood_summary`); without one it is None. (The
    image checks need the original pictures and do not run here; with ``tta`` no OOD score is
    taken.) ``tta`` averages the logits of a few mild views (:mod:`.tta`, 4x the cost); ``None`` follows
    the training recipe stored in the checkpoint (its config's ``tta``), else off.
    """
    state_dict, meta = load_weights_file(checkpoint_path)
    arch = arch or (meta.arch if meta else None)
    names = list(model_classes) if model_classes is not None else (meta.classes if meta else None)
    prep = preprocessing or (meta.preprocessing if meta else None)
    if arch is None or names is None or prep is None:
        raise ConfigError(
            f"{checkpoint_path} has no checkpoint meta: pass arch, model_classes and preprocessing."
        )
    if temperature is None:
        temperature = meta.temperature if meta else 1.0
    if thresholds is None and meta is not None:
        thresholds = meta.thresholds
    missing = [name for name in dataset_classes if name not in names]
    if missing:
        raise DatasetError(
            f"The dataset has class(es) {missing} that the model does not know (its classes: "
            f"{names}). Evaluate on a dataset with the model's classes."
        )
    remap = [names.index(name) for name in dataset_classes]
    mapped = [(path, remap[label]) for path, label in samples]

    device = resolve_device(device)
    model = place_model(build_for_inference(arch, names, state_dict), device)
    if tta is None:
        tta = bool(((meta.extra or {}).get("config") or {}).get("tta")) if meta else False
    if tta:
        model = TTAModel(model, prep).to(device)
    images = DecodedImages(dataset_root, mapped, indices, prep)
    plain = BatchAugment(prep, augment="none")
    output = evaluate(
        model,
        DeviceBatches(images, mapped, indices, plain, device, batch_size=batch_size),
        device,
        temperature=temperature,
        progress=progress,
        should_stop=should_stop,
        # The OOD reference scores one plain view: with TTA the classifier runs once per view.
        features_of=arch if ood_reference is not None and not tta else None,
    )
    if not output.complete or not output.n:
        return {
            "metrics": None,
            "roc": None,
            "reliability": None,
            "output": output,
            "predictions": None,
        }
    probs = output.probabilities()
    scores = None
    if ood_reference is not None and output.features is not None:
        scores = ood_reference.scores(output.features)
    # The batches follow `indices` in order (no shuffle), so row k is sample indices[k].
    predictions = SamplePredictions(
        classes=list(names),
        paths=[str(samples[i][0]) for i in list(indices)[: output.n]],
        labels=output.labels,
        probabilities=probs,
        ood_scores=scores,
        ood_threshold=ood_reference.threshold if ood_reference is not None else None,
    )
    metrics = with_calibration(
        classification_report(output.labels, probs, names, thresholds=thresholds),
        output,
        temperature,
    )
    metrics["images_per_s"] = output.images_per_s
    metrics["ood"] = (
        ood_summary(scores, ood_reference)
        if scores is not None and ood_reference is not None
        else None
    )
    return {
        "metrics": metrics,
        "roc": roc_curves(output.labels, probs, names),
        "reliability": reliability_bins(probs, output.labels),
        "output": output,
        "predictions": predictions,
    }
