"""The epochs of a :func:`~training.ml.train.fit.fit` run, with early stopping.

AdamW with a cosine learning rate per strategy phase ("full" first warms the new head up alone):
by default a linear warm-up then a cosine per optimizer step (:func:`warmup_cosine`), or the
older cosine per epoch (``lr_schedule="cosine_epoch"``);
after every epoch the validation split is evaluated, the weights of the lowest validation loss are
kept, and the run stops after ``early_stopping_patience`` epochs without improvement.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..models.weights import BackboneLoadReport
from ..preprocessing import Preprocessing
from .config import DEFAULT_LR, MIN_LR_FRACTION, StopCheck, TrainConfig, TrainingError
from .loop import EvalOutput, evaluate, steps_of, train_one_epoch
from .pipeline import RunBatches
from .progress import FitProgress
from .strategy import StrategyReport, apply_strategy, make_optimizer

logger = logging.getLogger(__name__)

__all__ = ["BestEpoch", "Epochs", "FitRun", "train_epochs", "warmup_cosine"]


@dataclass
class FitRun:
    """What every phase of one :func:`~training.ml.train.fit.fit` uses: the configuration, the
    batches, the model on its device, the loss and the progress reports."""

    config: TrainConfig
    class_names: list[str]
    prep: Preprocessing
    device: torch.device
    amp: bool
    batches: RunBatches
    model: nn.Module
    load_report: BackboneLoadReport | None
    loss_fn: nn.Module
    tracker: FitProgress
    should_stop: StopCheck | None


@dataclass
class _Phase:
    """The optimizer and learning-rate schedule of one strategy (a head warm-up, then the rest)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    report: StrategyReport
    per_step: bool = False


@dataclass
class BestEpoch:
    """The epoch with the lowest validation loss: its weights (a CPU copy) and validation output."""

    epoch: int
    loss: float
    state: dict[str, torch.Tensor]
    val: EvalOutput


@dataclass
class Epochs:
    """What the epochs left: the history, the best epoch (None before one finished), how they
    ended, and the strategy the last phase trained with."""

    strategy_report: StrategyReport
    history: list[dict[str, Any]] = field(default_factory=list)
    best: BestEpoch | None = None
    stopped_early: bool = False
    cancelled: bool = False

    def improves(self, val: EvalOutput, min_delta: float) -> bool:
        best_loss = self.best.loss if self.best is not None else math.inf
        return val.loss < best_loss - min_delta

    def keep(self, epoch: int, val: EvalOutput, model: nn.Module) -> None:
        """Remember ``epoch`` as the best so far, with a CPU copy of the model's weights."""
        state = {key: v.detach().to("cpu", copy=True) for key, v in model.state_dict().items()}
        self.best = BestEpoch(epoch=epoch, loss=val.loss, state=state, val=val)


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate factor after ``step`` optimizer steps: linear from ``1 / (warmup + 1)``
    to 1 over ``warmup_steps``, then a cosine down to :data:`MIN_LR_FRACTION` at
    ``total_steps`` (and there it stays)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return MIN_LR_FRACTION + (1.0 - MIN_LR_FRACTION) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _start_phase(run: FitRun, strategy: str, lr: float, epochs: int) -> _Phase:
    """Freeze for ``strategy``; a fresh AdamW whose rate follows the configured schedule over
    ``epochs`` (per step with a warm-up, or per epoch)."""
    config = run.config
    report = apply_strategy(run.model, config.arch, strategy, config.unfreeze_blocks)
    optimizer = make_optimizer(run.model, lr, config.weight_decay)
    logger.info("%s %s", config.arch, report.summary())
    if config.lr_schedule == "cosine_epoch":
        scheduler: torch.optim.lr_scheduler.LRScheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(1, epochs), eta_min=lr * MIN_LR_FRACTION
            )
        )
        return _Phase(optimizer=optimizer, scheduler=scheduler, report=report)
    steps = steps_of(run.batches.train, config.max_steps_per_epoch)
    total = max(1, epochs) * steps
    # A short run (one epoch, a trial with max_steps_per_epoch) warms up over half its steps.
    warmup = min(round(config.lr_warmup_epochs * steps), total // 2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(step, warmup_steps=warmup, total_steps=total),
    )
    return _Phase(optimizer=optimizer, scheduler=scheduler, report=report, per_step=True)


def train_epochs(run: FitRun) -> Epochs:
    """The epochs, with a head warm-up first for "full", keeping the weights of the lowest
    validation loss and stopping after ``early_stopping_patience`` epochs without improvement."""
    config = run.config
    warmup = config.warmup_head_epochs if config.strategy == "full" else 0
    if warmup:
        phase = _start_phase(run, "head", DEFAULT_LR["head"], warmup)
    else:
        phase = _start_phase(run, config.strategy, config.learning_rate, config.epochs)
    out = Epochs(strategy_report=phase.report)
    patience = config.early_stopping_patience or 0
    bad_epochs = 0
    for epoch in range(1, config.epochs + 1):
        if warmup and epoch == warmup + 1:
            phase = _start_phase(run, "full", config.learning_rate, config.epochs - warmup)
            out.strategy_report = phase.report
            bad_epochs = 0  # the backbone just started to move: give it a fresh patience
        measured = _one_epoch(run, phase, epoch, "head" if epoch <= warmup else config.strategy)
        if measured is None:
            out.cancelled = True
            break
        row, val = measured
        out.history.append(row)
        if out.improves(val, config.early_stopping_min_delta):
            out.keep(epoch, val, run.model)
            bad_epochs = 0
        else:
            bad_epochs += 1
            if patience and bad_epochs >= patience and epoch < config.epochs:
                out.stopped_early = True
                best = out.best.epoch if out.best is not None else None
                logger.info("early stop after epoch %d (best %s)", epoch, best)
                break
    return out


def _one_epoch(
    run: FitRun, phase: _Phase, epoch: int, phase_name: str
) -> tuple[dict[str, Any], EvalOutput] | None:
    """Train one epoch and evaluate the validation split: the history row and the validation
    output, or None when the run was cancelled."""
    config, model, device = run.config, run.model, run.device
    lr = phase.optimizer.param_groups[0]["lr"]
    train = train_one_epoch(
        model,
        run.batches.train,
        phase.optimizer,
        run.loss_fn,
        device,
        progress=run.tracker.phase_reporter("train", epoch),
        max_steps=config.max_steps_per_epoch,
        should_stop=run.should_stop,
        amp=run.amp,
        scheduler=phase.scheduler if phase.per_step else None,
    )
    if train["cancelled"]:
        return None
    val = evaluate(
        model,
        run.batches.val,
        device,
        progress=run.tracker.phase_reporter("val", epoch),
        should_stop=run.should_stop,
        amp=run.amp,
    )
    if not val.complete:
        return None
    if phase.per_step:
        # The epoch's highest rate (warm-up rises and the cosine falls, so it is at one end).
        lr = max(lr, phase.optimizer.param_groups[0]["lr"])
    else:
        phase.scheduler.step()
    row = {
        "epoch": epoch,
        "phase": phase_name,
        "train_loss": train["loss"],
        "train_acc": train["accuracy"],
        "val_loss": val.loss,
        "val_acc": val.accuracy,
        "lr": lr,
        "seconds": train["seconds"] + val.seconds,
        "images_per_s": train["images_per_s"],
        "val_images_per_s": val.images_per_s,
        "train_images": train["images"],
    }
    logger.info(
        "epoch %d/%d: train loss %.4f acc %.3f, val loss %.4f acc %.3f, %.1f img/s",
        epoch,
        config.epochs,
        row["train_loss"],
        row["train_acc"],
        val.loss,
        val.accuracy,
        row["images_per_s"] or 0.0,
    )
    if not math.isfinite(val.loss):
        raise TrainingError(
            f"The validation loss is {val.loss} after epoch {epoch}: training diverged. "
            f"Lower the learning rate (now {lr:g})."
        )
    return row, val
