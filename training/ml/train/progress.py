"""Progress of a :func:`~training.ml.train.fit.fit` run: throttled reports with an overall ETA."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from .config import ProgressCallback

__all__ = ["FitProgress"]


class FitProgress:
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
