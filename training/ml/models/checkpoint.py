"""Checkpoint files: a state dict plus what is needed to use it (architecture, classes, preprocessing).

Format ``cxr-checkpoint/1``: ``torch.save({"format": ..., "state_dict": ..., "meta": {...}})`` where
meta holds only JSON types, so the file loads with ``torch.load(weights_only=True)`` and the meta
can be copied into the database as is.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import MLError
from ..preprocessing import Preprocessing
from .architectures import ARCHITECTURES, build_model, head_name
from .weights import IncompatibleWeights, InvalidWeightsFile, extract_state_dict, read_torch_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointMeta",
    "CheckpointNotFound",
    "build_for_inference",
    "check_classes",
    "file_sha256",
    "load_weights_file",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "cxr-checkpoint/1"


class CheckpointNotFound(MLError, FileNotFoundError):
    """A weights file that should exist does not."""


def check_classes(classes: object) -> list[str]:
    """``classes`` as a list of distinct non-empty names; ValueError otherwise."""
    if not isinstance(classes, (list, tuple)) or not classes:
        raise ValueError(f"classes must be a non-empty list of names, got {classes!r}.")
    if not all(isinstance(c, str) and c for c in classes):
        raise ValueError(f"Every class name must be a non-empty string, got {classes!r}.")
    if len(set(classes)) != len(classes):
        raise ValueError(f"Class names must be unique, got {classes!r}.")
    return list(classes)


@dataclass
class CheckpointMeta:
    """What a state dict needs to be used: stored in the checkpoint next to it."""

    arch: str
    classes: list[str]
    preprocessing: Preprocessing
    temperature: float = 1.0
    thresholds: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "classes": list(self.classes),
            "preprocessing": self.preprocessing.to_dict(),
            "temperature": float(self.temperature),
            "thresholds": None if self.thresholds is None else dict(self.thresholds),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckpointMeta:
        thresholds = d.get("thresholds")
        return cls(
            arch=str(d["arch"]),
            classes=check_classes(d["classes"]),
            preprocessing=Preprocessing.from_dict(d["preprocessing"]),
            temperature=float(d.get("temperature", 1.0)),
            thresholds=None
            if thresholds is None
            else {str(k): float(v) for k, v in thresholds.items()},
            extra=dict(d.get("extra") or {}),
        )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    meta: CheckpointMeta,
) -> str:
    """Write a ``cxr-checkpoint/1`` file atomically and return its sha256 (hex).

    The head size is checked against ``meta.classes`` before anything is written.
    """
    if meta.arch not in ARCHITECTURES:
        raise ValueError(
            f"meta.arch {meta.arch!r} is not a supported architecture ({', '.join(ARCHITECTURES)})."
        )
    check_classes(meta.classes)
    if not (math.isfinite(meta.temperature) and meta.temperature > 0):
        raise ValueError(f"meta.temperature must be a positive number, got {meta.temperature!r}.")
    meta_dict = meta.to_dict()
    try:
        json.dumps(meta_dict, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MLError(
            f"Checkpoint meta must hold only JSON types (str, int, float, bool, None, lists, "
            f"dicts) so it loads with weights_only=True: {exc}. Convert numpy numbers with "
            f"float()/int() before putting them in meta.extra or thresholds."
        ) from exc

    raw = (
        model_or_state_dict.state_dict()
        if isinstance(model_or_state_dict, nn.Module)
        else model_or_state_dict
    )
    state = {key.removeprefix("module."): value.detach().cpu() for key, value in raw.items()}
    head_weight = state.get(f"{head_name(meta.arch)}.weight")
    if head_weight is not None and head_weight.shape[0] != len(meta.classes):
        raise IncompatibleWeights(
            f"The model's classifier has {head_weight.shape[0]} outputs but meta.classes has "
            f"{len(meta.classes)} names ({meta.classes}). Save with the classes it was trained on."
        )

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename, so a reader never sees a half-written checkpoint.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        torch.save({"format": CHECKPOINT_FORMAT, "state_dict": state, "meta": meta_dict}, tmp)
        digest = file_sha256(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return digest


def load_weights_file(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], CheckpointMeta | None]:
    """Read a ``cxr-checkpoint/1`` file, or a plain (torchvision) state dict with meta ``None``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFound(
            f"Weights file {path} does not exist. Check the model version's weights path and "
            f"that the media storage is mounted on this machine."
        )
    obj = read_torch_file(path)
    meta: CheckpointMeta | None = None
    if isinstance(obj, Mapping) and "format" in obj:
        if obj["format"] != CHECKPOINT_FORMAT:
            raise InvalidWeightsFile(
                f"{path} is a checkpoint in format {obj['format']!r}; this version of the app "
                f"reads {CHECKPOINT_FORMAT!r}. Upgrade the app or re-export the checkpoint."
            )
        try:
            meta = CheckpointMeta.from_dict(obj["meta"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidWeightsFile(f"{path} has unreadable checkpoint meta: {exc!r}.") from exc
        obj = obj.get("state_dict")
    return extract_state_dict(obj, path), meta


def _mismatch_message(
    arch: str,
    classes: list[str],
    own: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
) -> str | None:
    problems: list[str] = []
    head_key = f"{head_name(arch)}.weight"
    if head_key in given and given[head_key].ndim == 2 and given[head_key].shape[0] != len(classes):
        problems.append(
            f"the state dict's classifier ({head_key}) has {given[head_key].shape[0]} outputs but "
            f"{len(classes)} classes were given ({', '.join(classes)}); pass the classes the "
            f"model was trained with, in the same order"
        )
    missing = [key for key in own if key not in given]
    unexpected = [key for key in given if key not in own]
    shapes = [
        f"{key}: file {tuple(given[key].shape)} vs model {tuple(own[key].shape)}"
        for key in own
        if key in given
        and key != head_key
        and key != f"{head_name(arch)}.bias"
        and given[key].shape != own[key].shape
    ]
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:5])}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:3])}")
    if not problems:
        return None
    hint = ""
    if missing or unexpected or shapes:
        hint = f" Were these weights saved from another architecture (or size) than {arch}?"
    return (
        f"The weights do not fit {arch} with {len(classes)} classes: {'; '.join(problems)}.{hint}"
    )


def build_for_inference(
    arch: str, classes: list[str], state_dict: Mapping[str, torch.Tensor]
) -> nn.Module:
    """A ``len(classes)``-way ``arch`` with ``state_dict`` loaded strictly, in eval mode."""
    classes = check_classes(classes)
    model = build_model(arch, len(classes), weights=None)
    given = extract_state_dict(state_dict, "the state dict")
    message = _mismatch_message(arch, classes, model.state_dict(), given)
    if message:
        raise IncompatibleWeights(message)
    try:
        model.load_state_dict(given, strict=True)
    except RuntimeError as exc:  # anything the checks above did not foresee
        raise IncompatibleWeights(f"The weights do not fit {arch}: {exc}") from exc
    return model.eval()
