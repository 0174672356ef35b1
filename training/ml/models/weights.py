"""Weights files: read them safely, find the state dict, load a local backbone, and torchvision's
ImageNet weights (from ``$TORCH_HOME/hub/checkpoints``, downloaded there if missing)."""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from ..errors import MLError

__all__ = [
    "BackboneLoadReport",
    "IncompatibleWeights",
    "InvalidWeightsFile",
    "MissingPretrainedWeights",
    "build_imagenet",
    "extract_state_dict",
    "load_backbone_weights",
    "read_torch_file",
]


class MissingPretrainedWeights(MLError, FileNotFoundError):
    """Pretrained weights are needed but are neither on disk nor downloadable.

    ``path`` is where the file is expected. (Not OSError's ``filename``: setting that would turn
    ``str(error)`` into "[Errno None] None: '<path>'" and hide the message.)
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


class IncompatibleWeights(MLError, ValueError):
    """A state dict does not fit the model it is loaded into."""


class InvalidWeightsFile(MLError, ValueError):
    """A file is not a PyTorch state dict (or checkpoint) this app can read safely."""


# --------------------------------------------------------------------------------------------------
# Reading weights files
# --------------------------------------------------------------------------------------------------

# torchvision's old DenseNet checkpoints (the ones it still downloads) name layers 'norm.1' etc.
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def read_torch_file(path: str | os.PathLike[str]) -> object:
    """``torch.load(path, weights_only=True, map_location="cpu")`` with errors a human can act on.

    The caller checks that the file exists first, so a missing file gets its own message.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    # torch.load raises KeyError, EOFError, UnpicklingError, RuntimeError... for a foreign file.
    except Exception as exc:
        if "Weights only load failed" in str(exc) and zipfile.is_zipfile(path):
            raise InvalidWeightsFile(
                f"{path} holds pickled Python objects, not only tensors (for example a whole model "
                f"saved with torch.save(model)). For safety it is read with weights_only=True. "
                f"Re-save it as a state dict: torch.save(model.state_dict(), path)."
            ) from exc
        raise InvalidWeightsFile(
            f"{path} is not a PyTorch weights file ({type(exc).__name__}: {str(exc)[:200]}). "
            f"Expected a file written by torch.save() holding a state dict or a checkpoint."
        ) from exc


def extract_state_dict(obj: object, source: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Find the state dict in a loaded object and normalise its keys.

    Accepts a plain state dict, or a dict that wraps one under ``"state_dict"`` or ``"model"``
    (our checkpoints and most training scripts). Strips DataParallel's ``module.`` prefix and
    renames torchvision's legacy DenseNet keys.
    """
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise InvalidWeightsFile(
            f"{source} does not hold a state dict (found a {type(obj).__name__}). Save weights with "
            f"torch.save(model.state_dict(), path)."
        )
    if not obj:
        raise InvalidWeightsFile(f"{source} holds an empty dict: there are no weights in it.")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise InvalidWeightsFile(
                f"{source} is not a state dict: entry {key!r} is a {type(value).__name__}, not a "
                f"tensor. Save weights with torch.save(model.state_dict(), path)."
            )
        key = key.removeprefix("module.")
        match = _LEGACY_DENSENET_KEY.match(key)
        if match:
            key = match.group(1) + match.group(2)
        state[key] = value
    return state


@dataclass
class BackboneLoadReport:
    """What happened when a local backbone file was loaded into a model."""

    path: str
    loaded_keys: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    # Classifier tensors in the file whose shape does not fit the ImageNet head (dropped).
    dropped_keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded_keys)} tensors from {self.path}"]
        parts.append(
            f"missing {len(self.missing_keys)} (left at random init)"
            + (f": {_preview(self.missing_keys)}" if self.missing_keys else "")
        )
        parts.append(
            f"unexpected {len(self.unexpected_keys)} (ignored)"
            + (f": {_preview(self.unexpected_keys)}" if self.unexpected_keys else "")
        )
        if self.dropped_keys:
            parts.append(
                f"dropped {len(self.dropped_keys)} classifier tensors of another shape: "
                f"{_preview(self.dropped_keys)}"
            )
        return "; ".join(parts)


def _preview(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _last_linear_name(model: nn.Module) -> str | None:
    name = None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            name = module_name
    return name


def load_backbone_weights(model: nn.Module, path: str | os.PathLike[str]) -> BackboneLoadReport:
    """Load a local backbone state dict into ``model`` with ``strict=False`` and report the keys.

    Classifier tensors whose shape does not fit (a checkpoint fine-tuned for other classes) are
    dropped first; any other shape mismatch, or a file that shares no key with the model, raises
    :class:`IncompatibleWeights`.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPretrainedWeights(
            f"Backbone weights file {path} does not exist. Copy the weights file there, or pass "
            f"weights='imagenet' on a machine with internet (torchvision then downloads them).",
            path=path,
        )
    state = extract_state_dict(read_torch_file(path), path)
    own = model.state_dict()
    head = _last_linear_name(model)
    head_prefix = f"{head}." if head else None

    to_load: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    mismatched: list[str] = []
    for key, tensor in state.items():
        if key in own and own[key].shape != tensor.shape:
            if head_prefix and key.startswith(head_prefix):
                dropped.append(key)
            else:
                mismatched.append(
                    f"{key}: file {tuple(tensor.shape)} vs model {tuple(own[key].shape)}"
                )
            continue
        to_load[key] = tensor
    if mismatched:
        raise IncompatibleWeights(
            f"{path} does not fit a {type(model).__name__} backbone: {len(mismatched)} tensors have "
            f"other shapes ({_preview(mismatched, 4)}). Is it a backbone for another architecture "
            f"or model size?"
        )
    if not any(key in own for key in to_load):
        raise IncompatibleWeights(
            f"None of the {len(state)} tensors in {path} match a {type(model).__name__} model "
            f"(file keys look like {_preview(list(state), 3)}; the model's like "
            f"{_preview(list(own), 3)}). Is it a backbone for another architecture?"
        )
    result = model.load_state_dict(to_load, strict=False)
    return BackboneLoadReport(
        path=str(path),
        loaded_keys=[key for key in to_load if key in own],
        missing_keys=list(result.missing_keys),
        unexpected_keys=list(result.unexpected_keys),
        dropped_keys=dropped,
    )


# --------------------------------------------------------------------------------------------------
# ImageNet weights
# --------------------------------------------------------------------------------------------------


def _imagenet_file(arch: str) -> tuple[object, str, str, Path]:
    enum = get_model_weights(arch).DEFAULT
    url = enum.url
    filename = os.path.basename(urlparse(url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    return enum, url, filename, cached


def build_imagenet(arch: str) -> nn.Module:
    enum, url, filename, cached = _imagenet_file(arch)
    if cached.is_file():
        try:
            return get_model(arch, weights=enum)
        except Exception as exc:  # a corrupt or truncated cache file: torch.load raises many types
            raise InvalidWeightsFile(
                f"The cached ImageNet weights {cached} for {arch} could not be loaded ({exc}). "
                f"Delete the file and let torchvision download it again, or copy a good copy of "
                f"{url} to that path."
            ) from exc
    try:
        # torchvision downloads into torch.hub.get_dir()/checkpoints and loads from there.
        return get_model(arch, weights=enum)
    except (URLError, OSError, RuntimeError) as exc:
        torch_home = os.environ.get("TORCH_HOME", "<unset: ~/.cache/torch>")
        raise MissingPretrainedWeights(
            f"ImageNet weights for {arch} are not available: torchvision needs the file "
            f"{filename} at {cached} and could not download it from {url} ({exc}). "
            f"On a machine with internet, download {url} and copy it to {cached} "
            f"(that is $TORCH_HOME/hub/checkpoints/{filename}; TORCH_HOME is {torch_home}), "
            f"or pass a local backbone weights file instead of 'imagenet'.",
            path=cached,
        ) from exc
