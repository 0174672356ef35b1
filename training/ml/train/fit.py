"""Fine-tuning: ``fit`` is the whole recipe the training worker (or a command) runs:

1. seed everything, build ``arch`` with a fresh head (:func:`build_model`, ImageNet or a local
   backbone file), freeze it according to the strategy;
2. train with AdamW; the learning rate follows a cosine curve over the epochs (per epoch, down to
   1 % of the start), which needs no tuning and behaves well when early stopping cuts a run short;
3. after every epoch, evaluate the validation split; keep the weights with the lowest validation
   loss (plain cross-entropy, unweighted) and stop after ``early_stopping_patience`` epochs without
   improvement;
4. fit a temperature and per-class thresholds on the validation logits of the best epoch, write
   the checkpoint with them in its meta (with ``tta``, the calibrating validation pass and the
   test pass average a few views: :mod:`.tta`);
5. fit the out-of-distribution reference on the training split's pooled features of the best
   model, thresholded on the validation split (``<checkpoint>.ood.npz``, :mod:`.ood_phase`),
   then measure the test split once (with the share of its images the reference flags).

Progress goes to ``progress_callback(dict)``; ``should_stop()`` is polled before every step so a
cancelled run stops within one batch. The images come from :mod:`training.ml.train.pipeline`:
decoded once per run into a cache, augmented in batches on the training device. Each step is a
named phase below: :func:`_prepare` (batches, model, loss), :func:`~.epochs.train_epochs`,
:func:`_calibrate_and_save`, :func:`~.ood_phase.fit_ood_phase`, :func:`_test`.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.architectures import build_model
from ..models.checkpoint import CheckpointMeta, save_checkpoint
from .calibration import choose_thresholds, fit_temperature, reliability_bins, softmax
from .config import ProgressCallback, StopCheck, TrainConfig
from .dataset import class_weights
from .epochs import BestEpoch, Epochs, FitRun, train_epochs
from .loop import EvalOutput, evaluate, resolve_device, seed_everything, steps_of, with_calibration
from .metrics import classification_report, roc_curves
from .ood_phase import fit_ood_phase, flagged_share
from .pipeline import DeviceBatches, place_model, run_batches
from .progress import FitProgress
from .scan import DatasetError, FolderScan
from .splits import check_split
from .tta import TTAModel

logger = logging.getLogger(__name__)

__all__ = ["FitResult", "fit"]


@dataclass
class FitResult:
    """The outcome of :func:`fit`. :meth:`to_dict` gives the JSON-able part for the database."""

    history: list[dict[str, Any]]
    best_epoch: int | None
    test_metrics: dict[str, Any] | None
    val_metrics: dict[str, Any] | None
    temperature: float
    thresholds: dict[str, float] | None
    checkpoint_path: str | None
    sha256: str | None
    stopped_early: bool
    cancelled: bool
    backbone_report: str | None
    trainable_params: int
    total_params: int
    classes: list[str] = field(default_factory=list)
    preprocessing: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    strategy_summary: str | None = None
    #: ROC curves and reliability bins on the test split, for the plots (JSON-able).
    test_curves: dict[str, Any] | None = None
    #: Raw logits and labels (not JSON): per-image results, e.g. to compare two models.
    val_output: EvalOutput | None = field(default=None, repr=False)
    test_output: EvalOutput | None = field(default=None, repr=False)
    #: The OOD reference written beside the checkpoint (None when cancelled or not fitted) and
    #: its summary (OODReference.to_summary(), plus the test split's flagged share once tested).
    ood_path: str | None = None
    ood_summary: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in fields(self)
            if f.name not in ("val_output", "test_output")
        }
        return out


def _samples_and_classes(
    scan_or_samples: FolderScan | Sequence[tuple[str, int]], classes: Sequence[str] | None
) -> tuple[list[tuple[str, int]], list[str]]:
    if isinstance(scan_or_samples, FolderScan):
        if classes is not None and list(classes) != scan_or_samples.classes:
            raise DatasetError(
                f"classes {list(classes)} differ from the scan's {scan_or_samples.classes}."
            )
        return list(scan_or_samples.samples), list(scan_or_samples.classes)
    if classes is None:
        raise DatasetError(
            "Pass classes=[...] (the class names in label order) with a plain sample list, or "
            "pass the FolderScan itself."
        )
    samples = [(str(path), int(label)) for path, label in scan_or_samples]
    bad = sorted({label for _, label in samples if not 0 <= label < len(classes)})
    if bad:
        raise DatasetError(f"Sample labels {bad} are not indices into the {len(classes)} classes.")
    return samples, list(classes)


def fit(
    config: TrainConfig,
    dataset_root: str | os.PathLike[str],
    scan_or_samples: FolderScan | Sequence[tuple[str, int]],
    split: Mapping[str, Sequence[int]],
    *,
    checkpoint_path: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    progress_callback: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    progress_interval_s: float = 1.0,
    ood_percentile: float = 99.0,
) -> FitResult:
    """Train, calibrate, checkpoint and test one model; see the module docstring for the recipe.

    ``split`` is a :func:`~training.ml.train.data.stratified_split` result (train and val must be
    non-empty; an empty test split skips testing). ``progress_callback`` gets ``{"phase",
    "epoch", "epochs", "step", "steps", "loss", "eta_s", "images_per_s"}`` at the first and last
    step of every phase and at most every ``progress_interval_s`` seconds in between. When
    ``should_stop()`` returns True the run stops within one batch and the result has
    ``cancelled=True``: the best checkpoint so far is still calibrated and written if an epoch
    finished, else ``checkpoint_path`` is None. The test split is not evaluated after a cancel.
    The OOD reference's threshold is the ``ood_percentile`` of the validation split's scores.
    """
    samples, class_names = _samples_and_classes(scan_or_samples, classes)
    checked = check_split(split, len(samples))
    if len(checked["train"]) < 2:
        raise DatasetError("The train split needs at least 2 images (BatchNorm needs a batch).")
    run = _prepare(
        config,
        dataset_root,
        samples,
        checked,
        class_names,
        progress_callback=progress_callback,
        should_stop=should_stop,
        progress_interval_s=progress_interval_s,
    )
    epochs = train_epochs(run)
    result = _result(run, epochs)
    if epochs.best is None:
        return result
    _calibrate_and_save(run, epochs.best, result, checked, checkpoint_path)
    if epochs.cancelled:
        return result
    fitted = fit_ood_phase(
        run,
        samples,
        checked["train"],
        epochs.best.epoch,
        checkpoint_path,
        percentile=ood_percentile,
    )
    if fitted is not None:
        result.ood_path, result.ood_summary = str(fitted[1]), fitted[0].to_summary()
    if run.batches.test is None:
        return result
    _test(run, run.batches.test, result, epochs.best.epoch)
    if fitted is not None and result.test_output is not None:
        result.ood_summary = {
            **fitted[0].to_summary(),
            "test_flagged_share": flagged_share(fitted[0], result.test_output),
        }
    return result


def _prepare(
    config: TrainConfig,
    dataset_root: str | os.PathLike[str],
    samples: list[tuple[str, int]],
    split: dict[str, list[int]],
    class_names: list[str],
    *,
    progress_callback: ProgressCallback | None,
    should_stop: StopCheck | None,
    progress_interval_s: float,
) -> FitRun:
    """Seed, then the run's batches, the model on its device, the loss and the progress tracker."""
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    prep = config.preprocessing()
    k = len(class_names)

    batches = run_batches(config, dataset_root, samples, split, prep, device)
    model = build_model(config.arch, k, weights=config.weights)
    load_report = getattr(model, "backbone_load_report", None)
    place_model(model, device)

    weight = (
        class_weights(batches.train_labels, k).to(device)
        if config.imbalance == "weighted_loss"
        else None
    )
    tracker = FitProgress(
        progress_callback,
        epochs=config.epochs,
        interval_s=progress_interval_s,
        train_steps=steps_of(batches.train, config.max_steps_per_epoch),
        val_steps=len(batches.val),
        test_steps=len(batches.test) if batches.test is not None else 0,
    )
    return FitRun(
        config=config,
        class_names=class_names,
        prep=prep,
        device=device,
        amp=config.amp and device.type == "cuda",
        batches=batches,
        model=model,
        load_report=load_report,
        loss_fn=nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing),
        tracker=tracker,
        should_stop=should_stop,
    )


def _result(run: FitRun, epochs: Epochs) -> FitResult:
    """The result of the epochs alone: not yet calibrated, saved or tested."""
    return FitResult(
        history=epochs.history,
        best_epoch=epochs.best.epoch if epochs.best is not None else None,
        test_metrics=None,
        val_metrics=None,
        temperature=1.0,
        thresholds=None,
        checkpoint_path=None,
        sha256=None,
        stopped_early=epochs.stopped_early,
        cancelled=epochs.cancelled,
        backbone_report=run.load_report.summary() if run.load_report is not None else None,
        trainable_params=epochs.strategy_report.trainable_params,
        total_params=epochs.strategy_report.total_params,
        classes=run.class_names,
        preprocessing=run.prep.to_dict(),
        config=run.config.to_dict(),
        strategy_summary=epochs.strategy_report.summary(),
    )


def _calibrate_and_save(
    run: FitRun,
    best: BestEpoch,
    result: FitResult,
    split: dict[str, list[int]],
    checkpoint_path: str | os.PathLike[str],
) -> None:
    """Fit a temperature and thresholds on the best epoch's validation logits (no extra pass over
    the images) and write the best weights with them as the checkpoint."""
    config, best_val = run.config, best.val
    run.tracker.send("calibrate", best.epoch, step=0, steps=1)
    run.model.load_state_dict(best.state)
    if config.tta:
        best_val = evaluate(_eval_model(run), run.batches.val, run.device, amp=run.amp)
    temperature = fit_temperature(best_val.logits, best_val.labels)
    val_probs = softmax(best_val.logits, temperature)
    thresholds = choose_thresholds(
        best_val.labels,
        val_probs,
        run.class_names,
        target_sensitivity=config.target_sensitivity,
        strategy=config.threshold_strategy,
    )
    result.temperature = temperature
    result.thresholds = thresholds
    result.val_metrics = with_calibration(
        classification_report(best_val.labels, val_probs, run.class_names, thresholds=thresholds),
        best_val,
        temperature,
    )
    best_val.temperature = temperature
    result.val_output = best_val

    meta = CheckpointMeta(
        arch=config.arch,
        classes=run.class_names,
        preprocessing=run.prep,
        temperature=temperature,
        thresholds=thresholds,
        extra={
            "config": config.to_dict(),
            "best_epoch": best.epoch,
            "val_loss": float(best.loss),
            "threshold_strategy": config.threshold_strategy,
            "target_sensitivity": config.target_sensitivity,
            "split_sizes": {name: len(indices) for name, indices in split.items()},
        },
    )
    result.sha256 = save_checkpoint(checkpoint_path, best.state, meta)
    result.checkpoint_path = str(Path(checkpoint_path))
    run.tracker.send("calibrate", best.epoch, step=1, steps=1)


def _eval_model(run: FitRun) -> nn.Module:
    """The model as the version's evaluations see it: with test-time augmentation when asked."""
    return TTAModel(run.model, run.prep) if run.config.tta else run.model


def _test(run: FitRun, loader: DeviceBatches, result: FitResult, epoch: int) -> None:
    """Measure the test split once, at the calibrated temperature and thresholds."""
    test = evaluate(
        _eval_model(run),
        loader,
        run.device,
        temperature=result.temperature,
        progress=run.tracker.phase_reporter("test", epoch),
        should_stop=run.should_stop,
        amp=run.amp,
        # The OOD reference scores one plain view: with TTA the classifier runs once per view.
        features_of=None if run.config.tta else run.config.arch,
    )
    if not test.complete:
        result.cancelled = True
        return
    test_probs = test.probabilities()
    result.test_metrics = with_calibration(
        classification_report(
            test.labels, test_probs, run.class_names, thresholds=result.thresholds
        ),
        test,
        result.temperature,
    )
    result.test_metrics["images_per_s"] = test.images_per_s
    result.test_curves = {
        "roc": roc_curves(test.labels, test_probs, run.class_names),
        "reliability": reliability_bins(test_probs, test.labels),
        "reliability_uncalibrated": reliability_bins(test.probabilities(1.0), test.labels),
    }
    result.test_output = test
