"""One training epoch and one evaluation pass: the short functions :func:`fit` is made of.

Both iterate :data:`Batches` (a run's device batches from :mod:`training.ml.train.pipeline`, or
any DataLoader) and poll ``should_stop()`` so that a cancelled run stops within one batch.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..ood import FeatureCapture
from .calibration import expected_calibration_error, nll, softmax
from .config import ConfigError, ProgressCallback, StopCheck, TrainingError
from .pipeline import DeviceBatches
from .strategy import train_mode

__all__ = [
    "Batches",
    "EvalOutput",
    "evaluate",
    "resolve_device",
    "seed_everything",
    "steps_of",
    "train_one_epoch",
    "with_calibration",
]

#: What train_one_epoch and evaluate iterate: a run's device batches, or any DataLoader.
Batches = DataLoader | DeviceBatches


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


def _autocast(device: torch.device, amp: bool) -> Any:
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def steps_of(loader: Batches, max_steps: int | None) -> int:
    """The batches a pass over ``loader`` takes, at most ``max_steps``."""
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
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, Any]:
    """One pass over ``loader`` (at most ``max_steps`` batches); ``scheduler`` (a per-step
    learning-rate schedule) is stepped after every optimizer step.

    Returns ``{loss, accuracy, images, seconds, steps, images_per_s, cancelled}``; loss and
    accuracy are means over the images seen. ``progress`` gets ``{step, steps, loss,
    images_per_s, seconds}`` after every step; ``should_stop()`` is checked before every step.
    """
    device = torch.device(device)
    train_mode(model)
    tally = _Tally(optimizer, progress, steps_of(loader, max_steps), late=device.type == "cuda")
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
        if scheduler is not None:
            scheduler.step()
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
    #: The pooled penultimate features (N x D, float32) when evaluate() was asked for them.
    features: np.ndarray | None = None

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
    features_of: str | None = None,
) -> EvalOutput:
    """Logits and labels of every batch in eval mode, and the mean cross-entropy at ``temperature``.

    The loss is the plain (unweighted) negative log-likelihood, what early stopping and
    temperature scaling use. The model is left in eval mode. With ``features_of`` (the model's
    architecture) the output also holds each image's pooled penultimate features, taken from the
    same forward passes (the out-of-distribution reference and scores need them).
    """

    device = torch.device(device)
    model.eval()
    steps = steps_of(loader, max_steps)
    all_logits: list[torch.Tensor] = []
    all_labels: list[torch.Tensor] = []
    complete = True
    start = time.perf_counter()
    seen = 0
    capture = FeatureCapture(model, features_of) if features_of else None
    with torch.inference_mode(), capture or nullcontext():
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
        features=capture.features().numpy() if capture is not None else None,
    )


def with_calibration(
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
