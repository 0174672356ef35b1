"""The training recipe of a model version, as the version page shows it ("Recipe").

Read from the TrainingRun that made the version: its stored TrainConfig JSON, its result (best
epoch, early stop) and its dataset's patient grouping. A run stored before an option existed
trained without it, so a missing key reads as the behaviour of that time (no gamma jitter, a
cosine per epoch without warm-up, no test-time augmentation). An imported version has no run:
its recipe is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.models import ModelVersion

__all__ = ["Recipe", "version_recipe"]


@dataclass(frozen=True)
class Recipe:
    """``rows``: (label, value) pairs in display order; ``warning``: a caveat to show, or ""."""

    rows: list[tuple[str, str]]
    warning: str = ""


def version_recipe(version: ModelVersion) -> Recipe | None:
    """The recipe of ``version``'s training run, or None for an imported version."""
    run = version.training_run
    if run is None:
        return None
    config: dict[str, Any] = dict(run.config or {})
    result: dict[str, Any] = dict(run.result or {})
    grouping = run.dataset.grouping if run.dataset_id else ""
    rows = [
        ("Augmentation", _augmentation(config)),
        ("Input size", f"{version.input_size} px"),
        ("Epochs", _epochs(config, result, run.history or [])),
        ("Learning rate", _schedule(config)),
        ("Label smoothing", f"{float(config.get('label_smoothing') or 0.0):g}"),
        ("Strategy", _strategy(config)),
        ("Class imbalance", str(config.get("imbalance", "weighted_loss")).replace("_", " ")),
        ("Test-time augmentation", "on (4 views, logits averaged)" if config.get("tta") else "off"),
        ("Patient grouping", f"by {grouping}" if grouping else "none: split by image"),
        (
            "Model selection",
            f"lowest validation loss on the {'patient-grouped ' if grouping else ''}"
            "validation split",
        ),
    ]
    warning = (
        ""
        if grouping
        else "The dataset was split by image, not by patient: a patient's images may be in "
        "both training and test, so the internal test overstates the model."
    )
    return Recipe(rows=rows, warning=warning)


def _augmentation(config: dict[str, Any]) -> str:
    if config.get("augment", "cxr") == "none":
        parts = ["none"]
    else:
        parts = ["cxr: rotation, shift, zoom, brightness/contrast"]
        gamma = float(config.get("gamma") or 0.0)
        parts.append(f"gamma ±{gamma:.0%}" if gamma else "no gamma")
    parts.append("horizontal flips" if config.get("hflip") else "no horizontal flip")
    return ", ".join(parts)


def _epochs(config: dict[str, Any], result: dict[str, Any], history: list[Any]) -> str:
    planned = config.get("epochs")
    text = f"{len(history)} of {planned}" if planned else str(len(history))
    best = result.get("best_epoch")
    if best:
        text += f", best epoch {best}"
    if result.get("stopped_early"):
        patience = config.get("early_stopping_patience")
        text += f" (stopped early, patience {patience})"
    return text


def _schedule(config: dict[str, Any]) -> str:
    lr = config.get("lr")
    start = f"AdamW {lr:g}" if isinstance(lr, (int, float)) else "AdamW, strategy default"
    if config.get("lr_schedule", "cosine_epoch") == "cosine_epoch":
        return f"{start}; cosine per epoch, no warm-up"
    warmup = float(config.get("lr_warmup_epochs") or 0.0)
    lead = f"linear warm-up over {warmup:g} epoch(s), then " if warmup else ""
    return f"{start}; {lead}cosine per step"


def _strategy(config: dict[str, Any]) -> str:
    strategy = str(config.get("strategy", "head"))
    if strategy == "partial":
        return f"partial (last {config.get('unfreeze_blocks', 2)} backbone blocks)"
    if strategy == "full" and config.get("warmup_head_epochs"):
        return f"full (head alone for {config['warmup_head_epochs']} epoch(s) first)"
    return strategy
