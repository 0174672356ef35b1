"""Fine-tuning: a config dataclass, freezing strategies, and short train/evaluate/fit functions.

``fit`` is the whole recipe the training worker (or a command) runs:

1. seed everything, build ``arch`` with a fresh head (:func:`build_model`, ImageNet or a local
   backbone file), freeze it according to the strategy;
2. train with AdamW; the learning rate follows a cosine curve over the epochs (per epoch, down to
   1 % of the start), which needs no tuning and behaves well when early stopping cuts a run short;
3. after every epoch, evaluate the validation split; keep the weights with the lowest validation
   loss (plain cross-entropy, unweighted) and stop after ``early_stopping_patience`` epochs without
   improvement;
4. fit a temperature and per-class thresholds on the validation logits of the best epoch, write
   the checkpoint with them in its meta, then measure the test split once.

Progress goes to ``progress_callback(dict)``; ``should_stop()`` is polled before every step so a
cancelled run stops within one batch. The images come from :mod:`training.ml.pipeline`: decoded
once per run into a cache, augmented in batches on the training device.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .architectures import (
    build_model,
    head_name,
    head_parameters,
)
from .cache import DecodedImages
from .calibration import (
    choose_thresholds,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_bins,
    softmax,
)
from .checkpoint import CheckpointMeta, build_for_inference, load_weights_file, save_checkpoint
from .data import DatasetError, FolderScan, check_split, class_weights
from .gpu_augment import BatchAugment
from .metrics import classification_report, roc_curves
from .pipeline import DeviceBatches, place_model, run_batches
from .preprocessing import Preprocessing

logger = logging.getLogger(__name__)

#: What train_one_epoch and evaluate iterate: a run's device batches, or any DataLoader.
Batches = DataLoader | DeviceBatches

__all__ = [
    "DEFAULT_LR",
    "IMBALANCE_MODES",
    "STRATEGIES",
    "ConfigError",
    "EvalOutput",
    "FitResult",
    "StrategyReport",
    "TrainConfig",
    "TrainingError",
    "apply_strategy",
    "backbone_blocks",
    "evaluate",
    "evaluate_checkpoint",
    "fit",
    "resolve_device",
    "seed_everything",
    "train_mode",
    "train_one_epoch",
]

from .config import (  # noqa: E402  re-exported: the configuration lives torch-free there
    DEFAULT_LR,
    IMBALANCE_MODES,
    MIN_LR_FRACTION,
    STRATEGIES,
    ConfigError,
    ProgressCallback,
    StopCheck,
    TrainConfig,
    TrainingError,
)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; a CUDA request without CUDA is an error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"Device {device!r} was asked for but this machine has no usable CUDA GPU; use "
            f"device=None (automatic) or 'cpu'."
        )
    return resolved


# --------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------


def backbone_blocks(model: nn.Module, arch: str) -> list[tuple[str, list[str]]]:
    """The backbone as an ordered list of ``(block name, [module paths])``, input to output.

    What ``"partial"`` unfreezes, from the end:

    - ResNet: stem (conv1, bn1), layer1 ... layer4;
    - DenseNet: stem (conv0, norm0), then denseblock i with the transition after it (the last
      with norm5);
    - VGG: the five conv groups (each ends with a max-pool), then the two pretrained
      fully-connected layers of the classifier as one block;
    - EfficientNet, MobileNet: each ``features[i]``; MobileNetV3's pretrained ``classifier.0`` is
      a last block of its own.

    Together with the head, the blocks hold every parameter of the model.
    """
    if arch.startswith("resnet"):
        return [("stem", ["conv1", "bn1"])] + [(f"layer{i}", [f"layer{i}"]) for i in range(1, 5)]
    if arch.startswith("densenet"):
        blocks = [("stem", ["features.conv0", "features.norm0"])]
        for i in range(1, 5):
            after = f"features.transition{i}" if i < 4 else "features.norm5"
            blocks.append((f"denseblock{i}", [f"features.denseblock{i}", after]))
        return blocks
    if arch.startswith("vgg"):
        blocks, group = [], []
        for index, module in enumerate(model.features):  # type: ignore[arg-type]
            group.append(f"features.{index}")
            if isinstance(module, nn.MaxPool2d):
                blocks.append((f"conv{len(blocks) + 1}", group))
                group = []
        if group:
            blocks.append((f"conv{len(blocks) + 1}", group))
    else:  # efficientnet_*, mobilenet_*
        blocks = [(f"features.{i}", [f"features.{i}"]) for i in range(len(model.features))]  # type: ignore[arg-type]
    # Pretrained Linear layers between the features and the head (VGG fc6/fc7, MobileNetV3's).
    head = head_name(arch)
    extra = [
        name
        for name, module in model.named_modules()
        if name.startswith("classifier") and isinstance(module, nn.Linear) and name != head
    ]
    if extra:
        blocks.append(("classifier", extra))
    return blocks


@dataclass
class StrategyReport:
    """What :func:`apply_strategy` made trainable."""

    strategy: str
    trainable_blocks: list[str]
    trainable_params: int
    total_params: int
    param_groups: list[dict[str, Any]] = field(repr=False, default_factory=list)

    def summary(self) -> str:
        share = self.trainable_params / self.total_params if self.total_params else 0.0
        blocks = ", ".join(self.trainable_blocks) if self.trainable_blocks else "none"
        return (
            f"{self.strategy}: {self.trainable_params:,} of {self.total_params:,} parameters "
            f"trainable ({share:.1%}); backbone blocks trained: {blocks}"
        )


def apply_strategy(
    model: nn.Module, arch: str, strategy: str, unfreeze_blocks: int = 2
) -> StrategyReport:
    """Freeze ``model`` for a strategy, in place, and report what trains.

    ``"head"``: only the new classifier; ``"partial"``: the last ``unfreeze_blocks`` backbone
    blocks (see :func:`backbone_blocks`) and the head; ``"full"``: everything. Frozen parameters
    get ``requires_grad=False``; call :func:`train_mode` (``train_one_epoch`` does) instead of
    ``model.train()`` so frozen BatchNorm layers keep their ImageNet running statistics.
    ``param_groups`` holds ``{"name": "head"|"backbone", "params": [...]}`` for the optimizer.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"Unknown strategy {strategy!r}; choose one of {STRATEGIES}.")
    head = head_parameters(model, arch)
    blocks = backbone_blocks(model, arch)
    if strategy == "full":
        model.requires_grad_(True)
        trained = [name for name, _ in blocks]
    else:
        model.requires_grad_(False)
        trained = []
        if strategy == "partial" and unfreeze_blocks > 0:
            for name, paths in blocks[-unfreeze_blocks:]:
                for path in paths:
                    model.get_submodule(path).requires_grad_(True)
                trained.append(name)
    for parameter in head:
        parameter.requires_grad_(True)

    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups: list[dict[str, Any]] = [{"name": "head", "params": head}]
    if backbone:
        groups.append({"name": "backbone", "params": backbone})
    return StrategyReport(
        strategy=strategy,
        trainable_blocks=trained,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in model.parameters()),
        param_groups=groups,
    )


def train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, except BatchNorm layers whose parameters are frozen stay in eval mode.

    In train mode a BatchNorm layer normalises with batch statistics and overwrites its running
    mean/var even when its weights are frozen: a "frozen" backbone would silently drift from its
    ImageNet statistics (and behave differently at eval time).
    """
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own = list(module.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                module.eval()
    return model


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            # Biases and normalisation scales are not weights to shrink.
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # On a GPU one fused kernel updates every parameter (instead of a few per tensor list).
    fused = all(p.is_cuda for p in decay + no_decay)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=fused or None)


# --------------------------------------------------------------------------------------------------
# One epoch, one evaluation
# --------------------------------------------------------------------------------------------------


def _autocast(device: torch.device, amp: bool) -> Any:
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _steps(loader: Batches, max_steps: int | None) -> int:
    return len(loader) if max_steps is None else min(len(loader), max_steps)


def train_one_epoch(
    model: nn.Module,
    loader: Batches,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: str | torch.device,
    *,
    progress: ProgressCallback | None = None,
    max_steps: int | None = None,
    should_stop: StopCheck | None = None,
    amp: bool = False,
) -> dict[str, Any]:
    """One pass over ``loader`` (at most ``max_steps`` batches).

    Returns ``{loss, accuracy, images, seconds, steps, images_per_s, cancelled}``; loss and
    accuracy are means over the images seen. ``progress`` gets ``{step, steps, loss,
    images_per_s, seconds}`` after every step; ``should_stop()`` is checked before every step.
    """
    device = torch.device(device)
    train_mode(model)
    tally = _Tally(optimizer, progress, _steps(loader, max_steps), late=device.type == "cuda")
    cancelled = False
    for inputs, targets in loader:
        if should_stop is not None and should_stop():
            cancelled = True
            break
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            logits = model(inputs)
        loss = loss_fn(logits.float(), targets)
        loss.backward()
        optimizer.step()
        tally.add(loss, logits, targets)
        if tally.done >= tally.steps:
            break  # before the loader decodes a batch that would not be used
    return {**tally.finish(), "cancelled": cancelled}


class _Tally:
    """An epoch's loss and accuracy. With ``late`` (on a GPU) each step's loss is read one step
    late: the next step is queued on the GPU before Python waits for this one, so the GPU never
    idles for Python; a non-finite loss then stops the run one step later (on the CPU, at once:
    there the ops run as they are called, so waiting later gains nothing).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        progress: ProgressCallback | None,
        steps: int,
        *,
        late: bool,
    ) -> None:
        self.optimizer, self.progress, self.steps, self.late = optimizer, progress, steps, late
        self.total_loss, self.correct, self.images, self.done = 0.0, 0, 0, 0
        self.pending: tuple[torch.Tensor, torch.Tensor, int] | None = None
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        hits = (logits.detach().argmax(dim=1) == targets).sum()
        self._settle()
        self.pending = (loss.detach(), hits, int(targets.shape[0]))
        self.done += 1
        if not self.late:
            self._settle()

    def _settle(self) -> None:
        if self.pending is None:
            return
        loss, hits, batch = self.pending
        self.pending = None
        value = loss.item()
        if not math.isfinite(value):
            lr = self.optimizer.param_groups[0]["lr"]
            raise TrainingError(
                f"The training loss became {value} at step {self.done}: training diverged. "
                f"Lower the learning rate (now {lr:g}) or check the images."
            )
        self.images += batch
        self.total_loss += value * batch
        self.correct += int(hits)
        if self.progress is not None:
            elapsed = time.perf_counter() - self.start
            self.progress(
                {
                    "step": self.done,
                    "steps": self.steps,
                    "loss": self.total_loss / self.images,
                    "images_per_s": self.images / elapsed if elapsed > 0 else None,
                    "seconds": elapsed,
                }
            )

    def finish(self) -> dict[str, Any]:
        """``{loss, accuracy, images, seconds, steps, images_per_s}`` of the steps taken."""
        self._settle()
        seconds = time.perf_counter() - self.start
        images = self.images
        return {
            "loss": self.total_loss / images if images else float("nan"),
            "accuracy": self.correct / images if images else float("nan"),
            "images": images,
            "seconds": seconds,
            "steps": self.done,
            "images_per_s": images / seconds if images and seconds > 0 else None,
        }


@dataclass
class EvalOutput:
    """Raw logits (N x K, float64), true labels (N,), and the cross-entropy at ``temperature``."""

    logits: np.ndarray
    labels: np.ndarray
    loss: float
    temperature: float = 1.0
    seconds: float = 0.0
    complete: bool = True  # False when should_stop() interrupted it

    @property
    def n(self) -> int:
        return int(len(self.labels))

    @property
    def accuracy(self) -> float:
        return float((self.logits.argmax(axis=1) == self.labels).mean()) if self.n else math.nan

    @property
    def images_per_s(self) -> float | None:
        return self.n / self.seconds if self.n and self.seconds > 0 else None

    def probabilities(self, temperature: float | None = None) -> np.ndarray:
        """``softmax(logits / T)``, with ``self.temperature`` unless another T is given."""
        return softmax(self.logits, self.temperature if temperature is None else temperature)


def evaluate(
    model: nn.Module,
    loader: Batches,
    device: str | torch.device,
    *,
    temperature: float = 1.0,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    max_steps: int | None = None,
    amp: bool = False,
) -> EvalOutput:
    """Logits and labels of every batch in eval mode, and the mean cross-entropy at ``temperature``.

    The loss is the plain (unweighted) negative log-likelihood, what early stopping and
    temperature scaling use. The model is left in eval mode.
    """
    device = torch.device(device)
    model.eval()
    steps = _steps(loader, max_steps)
    all_logits: list[torch.Tensor] = []
    all_labels: list[torch.Tensor] = []
    complete = True
    start = time.perf_counter()
    seen = 0
    with torch.inference_mode():
        for done, (inputs, targets) in enumerate(loader, start=1):
            if should_stop is not None and should_stop():
                complete = False
                break
            with _autocast(device, amp):
                logits = model(inputs.to(device, non_blocking=True))
            all_logits.append(logits.float().cpu())
            all_labels.append(targets.cpu())
            seen += targets.shape[0]
            if progress is not None:
                elapsed = time.perf_counter() - start
                progress(
                    {
                        "step": done,
                        "steps": steps,
                        "images_per_s": seen / elapsed if elapsed > 0 else None,
                        "seconds": elapsed,
                    }
                )
            if done >= steps:
                break
    seconds = time.perf_counter() - start
    if all_logits:
        logits_np = torch.cat(all_logits).double().numpy()
        labels_np = torch.cat(all_labels).numpy().astype(np.int64)
        loss = nll(logits_np, labels_np, temperature)
    else:
        logits_np = np.zeros((0, 0))
        labels_np = np.zeros(0, dtype=np.int64)
        loss = math.nan
    return EvalOutput(
        logits=logits_np,
        labels=labels_np,
        loss=loss,
        temperature=float(temperature),
        seconds=seconds,
        complete=complete,
    )


# --------------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------------


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

    def to_dict(self) -> dict[str, Any]:
        out = {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in fields(self)
            if f.name not in ("val_output", "test_output")
        }
        return out


class _Progress:
    """Turns per-step reports into throttled ``progress_callback`` dicts with an overall ETA."""

    def __init__(
        self,
        callback: ProgressCallback | None,
        *,
        epochs: int,
        interval_s: float,
        train_steps: int,
        val_steps: int,
        test_steps: int,
    ) -> None:
        self.callback = callback
        self.epochs = epochs
        self.interval_s = interval_s
        self.train_steps = train_steps
        self.val_steps = val_steps
        self.test_steps = test_steps
        self.step_s: dict[str, float] = {}
        self.last_sent = -math.inf

    def _step_seconds(self, phase: str) -> float:
        """Measured seconds per step of ``phase``, or a guess from another phase until then."""
        if phase in self.step_s:
            return self.step_s[phase]
        if phase == "train":
            return self.step_s.get("val", 0.0) * 1.5
        # An eval step (a double batch, forward only) costs about 2/3 of a training step.
        return self.step_s.get("val", self.step_s.get("test", self.step_s.get("train", 0.0) / 1.5))

    def eta(self, phase: str, epoch: int, step: int, steps: int) -> float:
        left = (steps - step) * self._step_seconds(phase)
        epochs_left = self.epochs - epoch
        if phase == "train":
            left += self.val_steps * self._step_seconds("val")
        if phase in ("train", "val"):
            left += epochs_left * (
                self.train_steps * self._step_seconds("train")
                + self.val_steps * self._step_seconds("val")
            )
            left += self.test_steps * self._step_seconds("test")
        return max(0.0, left)

    def phase_reporter(self, phase: str, epoch: int) -> Callable[[dict[str, Any]], None]:
        def report(info: dict[str, Any]) -> None:
            if info.get("seconds") and info["step"]:
                self.step_s[phase] = info["seconds"] / info["step"]
            last = info["step"] >= info["steps"]
            self.send(
                phase,
                epoch,
                step=info["step"],
                steps=info["steps"],
                loss=info.get("loss"),
                images_per_s=info.get("images_per_s"),
                force=info["step"] == 1 or last,
            )

        return report

    def send(
        self,
        phase: str,
        epoch: int,
        *,
        step: int,
        steps: int,
        loss: float | None = None,
        images_per_s: float | None = None,
        force: bool = True,
    ) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if not force and now - self.last_sent < self.interval_s:
            return
        self.last_sent = now
        self.callback(
            {
                "phase": phase,
                "epoch": epoch,
                "epochs": self.epochs,
                "step": step,
                "steps": steps,
                "loss": loss,
                "eta_s": self.eta(phase, epoch, step, steps),
                "images_per_s": images_per_s,
            }
        )


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
) -> FitResult:
    """Train, calibrate, checkpoint and test one model; see the module docstring for the recipe.

    ``split`` is a :func:`~training.ml.data.stratified_split` result (train and val must be
    non-empty; an empty test split skips testing). ``progress_callback`` gets ``{"phase",
    "epoch", "epochs", "step", "steps", "loss", "eta_s", "images_per_s"}`` at the first and last
    step of every phase and at most every ``progress_interval_s`` seconds in between. When
    ``should_stop()`` returns True the run stops within one batch and the result has
    ``cancelled=True``: the best checkpoint so far is still calibrated and written if an epoch
    finished, else ``checkpoint_path`` is None. The test split is not evaluated after a cancel.
    """
    samples, class_names = _samples_and_classes(scan_or_samples, classes)
    split = check_split(split, len(samples))
    if len(split["train"]) < 2:
        raise DatasetError("The train split needs at least 2 images (BatchNorm needs a batch).")
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    amp = config.amp and device.type == "cuda"
    prep = config.preprocessing()
    k = len(class_names)

    batches = run_batches(config, dataset_root, samples, split, prep, device)
    train_labels = batches.train_labels
    train_loader, val_loader, test_loader = batches.train, batches.val, batches.test

    model = build_model(config.arch, k, weights=config.weights)
    load_report = getattr(model, "backbone_load_report", None)
    place_model(model, device)

    weight = (
        class_weights(train_labels, k).to(device) if config.imbalance == "weighted_loss" else None
    )
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)

    warmup = config.warmup_head_epochs if config.strategy == "full" else 0
    train_steps = _steps(train_loader, config.max_steps_per_epoch)
    tracker = _Progress(
        progress_callback,
        epochs=config.epochs,
        interval_s=progress_interval_s,
        train_steps=train_steps,
        val_steps=len(val_loader),
        test_steps=len(test_loader) if test_loader is not None else 0,
    )

    def start_phase(strategy: str, lr: float, epochs: int) -> tuple[Any, Any, StrategyReport]:
        report = apply_strategy(model, config.arch, strategy, config.unfreeze_blocks)
        optimizer = _optimizer(model, lr, config.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, epochs), eta_min=lr * MIN_LR_FRACTION
        )
        logger.info("%s %s", config.arch, report.summary())
        return optimizer, scheduler, report

    if warmup:
        optimizer, scheduler, strategy_report = start_phase("head", DEFAULT_LR["head"], warmup)
    else:
        optimizer, scheduler, strategy_report = start_phase(
            config.strategy, config.learning_rate, config.epochs
        )

    history: list[dict[str, Any]] = []
    best_loss = math.inf
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_val: EvalOutput | None = None
    bad_epochs = 0
    stopped_early = False
    cancelled = False
    patience = config.early_stopping_patience or 0

    for epoch in range(1, config.epochs + 1):
        if warmup and epoch == warmup + 1:
            optimizer, scheduler, strategy_report = start_phase(
                "full", config.learning_rate, config.epochs - warmup
            )
            bad_epochs = 0  # the backbone just started to move: give it a fresh patience
        lr = optimizer.param_groups[0]["lr"]
        train = train_one_epoch(
            model,
            train_loader,
            optimizer,
            loss_fn,
            device,
            progress=tracker.phase_reporter("train", epoch),
            max_steps=config.max_steps_per_epoch,
            should_stop=should_stop,
            amp=amp,
        )
        if train["cancelled"]:
            cancelled = True
            break
        val = evaluate(
            model,
            val_loader,
            device,
            progress=tracker.phase_reporter("val", epoch),
            should_stop=should_stop,
            amp=amp,
        )
        if not val.complete:
            cancelled = True
            break
        scheduler.step()
        row = {
            "epoch": epoch,
            "phase": "head" if epoch <= warmup else config.strategy,
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
        history.append(row)
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
        if val.loss < best_loss - config.early_stopping_min_delta:
            best_loss, best_epoch, best_val = val.loss, epoch, val
            best_state = {
                key: v.detach().to("cpu", copy=True) for key, v in model.state_dict().items()
            }
            bad_epochs = 0
        else:
            bad_epochs += 1
            if patience and bad_epochs >= patience and epoch < config.epochs:
                stopped_early = True
                logger.info("early stop after epoch %d (best %s)", epoch, best_epoch)
                break

    result = FitResult(
        history=history,
        best_epoch=best_epoch,
        test_metrics=None,
        val_metrics=None,
        temperature=1.0,
        thresholds=None,
        checkpoint_path=None,
        sha256=None,
        stopped_early=stopped_early,
        cancelled=cancelled,
        backbone_report=load_report.summary() if load_report is not None else None,
        trainable_params=strategy_report.trainable_params,
        total_params=strategy_report.total_params,
        classes=class_names,
        preprocessing=prep.to_dict(),
        config=config.to_dict(),
        strategy_summary=strategy_report.summary(),
    )
    if best_state is None or best_val is None:
        return result

    # Calibrate on the best epoch's validation logits: no extra pass over the images.
    tracker.send("calibrate", best_epoch or 0, step=0, steps=1)
    model.load_state_dict(best_state)
    temperature = fit_temperature(best_val.logits, best_val.labels)
    val_probs = softmax(best_val.logits, temperature)
    thresholds = choose_thresholds(
        best_val.labels,
        val_probs,
        class_names,
        target_sensitivity=config.target_sensitivity,
        strategy=config.threshold_strategy,
    )
    result.temperature = temperature
    result.thresholds = thresholds
    result.val_metrics = _with_calibration(
        classification_report(best_val.labels, val_probs, class_names, thresholds=thresholds),
        best_val,
        temperature,
    )
    best_val.temperature = temperature
    result.val_output = best_val

    meta = CheckpointMeta(
        arch=config.arch,
        classes=class_names,
        preprocessing=prep,
        temperature=temperature,
        thresholds=thresholds,
        extra={
            "config": config.to_dict(),
            "best_epoch": best_epoch,
            "val_loss": float(best_loss),
            "threshold_strategy": config.threshold_strategy,
            "target_sensitivity": config.target_sensitivity,
            "split_sizes": {name: len(indices) for name, indices in split.items()},
        },
    )
    result.sha256 = save_checkpoint(checkpoint_path, best_state, meta)
    result.checkpoint_path = str(Path(checkpoint_path))
    tracker.send("calibrate", best_epoch or 0, step=1, steps=1)

    if test_loader is None or cancelled:
        return result
    test = evaluate(
        model,
        test_loader,
        device,
        temperature=temperature,
        progress=tracker.phase_reporter("test", best_epoch or 0),
        should_stop=should_stop,
        amp=amp,
    )
    if not test.complete:
        result.cancelled = True
        return result
    test_probs = test.probabilities()
    result.test_metrics = _with_calibration(
        classification_report(test.labels, test_probs, class_names, thresholds=thresholds),
        test,
        temperature,
    )
    result.test_metrics["images_per_s"] = test.images_per_s
    result.test_curves = {
        "roc": roc_curves(test.labels, test_probs, class_names),
        "reliability": reliability_bins(test_probs, test.labels),
        "reliability_uncalibrated": reliability_bins(test.probabilities(1.0), test.labels),
    }
    result.test_output = test
    return result


def _with_calibration(
    report: dict[str, Any], output: EvalOutput, temperature: float
) -> dict[str, Any]:
    """Add before/after temperature-scaling figures to a report computed at ``temperature``."""
    raw = output.probabilities(1.0)
    report["temperature"] = float(temperature)
    report["ece_uncalibrated"] = expected_calibration_error(raw, output.labels)
    report["ece_calibrated"] = report["ece"]
    report["nll_uncalibrated"] = nll(output.logits, output.labels, 1.0)
    report["nll_calibrated"] = nll(output.logits, output.labels, temperature)
    return report


# --------------------------------------------------------------------------------------------------
# Evaluating a saved model
# --------------------------------------------------------------------------------------------------


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
) -> dict[str, Any]:
    """Evaluate a saved model on ``indices`` of a dataset, e.g. a candidate and the production
    model on the same stored test split.

    Architecture, classes, preprocessing, temperature and thresholds come from the checkpoint's
    meta unless given (a plain state dict needs ``arch``, ``model_classes`` and
    ``preprocessing``). Dataset labels are matched to the model's classes by name, so a model and
    a dataset may list them in different orders; a dataset class the model lacks is an error.
    Returns ``{"metrics", "roc", "reliability", "output"}`` (``output`` is an :class:`EvalOutput`).
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
    images = DecodedImages(dataset_root, mapped, indices, prep)
    plain = BatchAugment(prep, augment="none")
    output = evaluate(
        model,
        DeviceBatches(images, mapped, indices, plain, device, batch_size=batch_size),
        device,
        temperature=temperature,
        progress=progress,
        should_stop=should_stop,
    )
    if not output.complete or not output.n:
        return {"metrics": None, "roc": None, "reliability": None, "output": output}
    probs = output.probabilities()
    metrics = _with_calibration(
        classification_report(output.labels, probs, names, thresholds=thresholds),
        output,
        temperature,
    )
    metrics["images_per_s"] = output.images_per_s
    return {
        "metrics": metrics,
        "roc": roc_curves(output.labels, probs, names),
        "reliability": reliability_bins(probs, output.labels),
        "output": output,
    }
