"""The out-of-distribution phase of :func:`~training.ml.train.fit.fit`: the best model's pooled
features of the training split (evaluation transform, no augmentation) become the reference, the
validation split's set its threshold (see :mod:`training.ml.ood`). Written beside the checkpoint
as ``<checkpoint>.ood.npz``."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..ood import OODError, OODReference, fit_reference
from .epochs import FitRun
from .gpu_augment import BatchAugment
from .loop import EvalOutput, evaluate
from .pipeline import DeviceBatches

logger = logging.getLogger(__name__)

__all__ = ["ood_path_for", "fit_ood_phase", "flagged_share"]


def ood_path_for(checkpoint_path: str | os.PathLike[str]) -> Path:
    """Where the OOD reference of a checkpoint lives: beside it, ``<checkpoint>.ood.npz``."""
    return Path(f"{os.fspath(checkpoint_path)}.ood.npz")


def _features(run: FitRun, batches: DeviceBatches, epoch: int, phase: str) -> EvalOutput | None:
    out = evaluate(
        run.model,
        batches,
        run.device,
        progress=run.tracker.phase_reporter(phase, epoch),
        should_stop=run.should_stop,
        amp=run.amp,
        features_of=run.config.arch,
    )
    return out if out.complete and out.features is not None and out.n else None


def fit_ood_phase(
    run: FitRun,
    samples: Sequence[tuple[str, int]],
    train_indices: Sequence[int],
    epoch: int,
    checkpoint_path: str | os.PathLike[str],
    *,
    percentile: float,
) -> tuple[OODReference, Path] | None:
    """Fit and save the reference of the model as it is (the best epoch's weights, loaded).

    One forward pass over the training split and one over the validation split, with the
    evaluation transform. Returns None when cancelled or when the features cannot be fitted
    (logged): the model is still usable, its predictions then carry only the image checks."""
    plain = BatchAugment(run.prep, augment="none")
    train_batches = DeviceBatches(
        run.batches.images,
        samples,
        list(train_indices),
        plain,
        run.device,
        batch_size=run.config.batch_size * 2,
    )
    train = _features(run, train_batches, epoch, "ood")
    val = _features(run, run.batches.val, epoch, "ood") if train is not None else None
    if train is None or val is None:
        return None
    try:
        reference = fit_reference(
            np.asarray(train.features), np.asarray(val.features), percentile=percentile
        )
    except OODError as exc:
        logger.warning("no OOD reference for this run: %s", exc)
        return None
    path = ood_path_for(checkpoint_path)
    reference.save(path)
    logger.info("OOD reference: %s", reference.to_summary())
    return reference, path


def flagged_share(reference: OODReference, output: EvalOutput) -> float | None:
    """The share of ``output``'s images whose score is over the reference's threshold."""
    if output.features is None or not output.n:
        return None
    return float((reference.scores(output.features) > reference.threshold).mean())
