"""CNN backbones for chest X-ray classification: the architecture table (head and Grad-CAM layer of
each), building a model, swapping its head, and each architecture's default preprocessing.
Weights files are read in :mod:`.weights`; Grad-CAM preparation is in :mod:`.cam`.

Every model is a torchvision classification model whose ImageNet head has been replaced by a fresh
``nn.Linear(in_features, num_classes)``. The state-dict layout is therefore torchvision's own, which
keeps checkpoints loadable with nothing but torchvision and the architecture name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from ..errors import MLError
from ..preprocessing import Preprocessing
from .weights import (
    BackboneLoadReport,
    IncompatibleWeights,
    build_imagenet,
    load_backbone_weights,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "arch_spec",
    "UnknownArchitecture",
    "build_model",
    "default_preprocessing",
    "head_layer",
    "head_name",
    "head_parameters",
    "model_device",
    "replace_head",
]


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class UnknownArchitecture(MLError, ValueError):
    """The architecture name is not one this app supports."""

    def __init__(self, arch: str) -> None:
        self.arch = arch
        super().__init__(
            f"Unknown architecture {arch!r}. Supported architectures: {', '.join(ARCHITECTURES)}."
        )


# --------------------------------------------------------------------------------------------------
# Architecture table
# --------------------------------------------------------------------------------------------------


def _last_relu_of_features(model: nn.Module) -> nn.Module:
    relus = [m for m in model.features.modules() if isinstance(m, nn.ReLU)]  # type: ignore[union-attr]
    return relus[-1]


def _resnet_cam(model: nn.Module) -> nn.Module:
    return model.layer4[-1]  # type: ignore[index,return-value]


def _features_last_cam(model: nn.Module) -> nn.Module:
    return model.features[-1]  # type: ignore[index,return-value]


def _densenet_cam(model: nn.Module) -> nn.Module:
    return model.features.norm5  # type: ignore[union-attr,return-value]


@dataclass(frozen=True)
class ArchSpec:
    """Where an architecture keeps its classifier head and which layer Grad-CAM hooks."""

    head: str  # dotted path of the classifier nn.Linear that replace_head swaps
    cam_layer: Callable[[nn.Module], nn.Module]


_RESNET = ArchSpec(head="fc", cam_layer=_resnet_cam)
# VGG: the last ReLU of `features` (index 29 for vgg16) is the last conv activation before pooling.
_VGG = ArchSpec(head="classifier.6", cam_layer=_last_relu_of_features)
# DenseNet: norm5 is the last module of `features`; the ReLU after it lives in DenseNet.forward,
# see prepare_for_cam for why that matters.
_DENSENET = ArchSpec(head="classifier", cam_layer=_densenet_cam)
_EFFICIENTNET = ArchSpec(head="classifier.1", cam_layer=_features_last_cam)
_MOBILENET_V3 = ArchSpec(head="classifier.3", cam_layer=_features_last_cam)

_SPECS: dict[str, ArchSpec] = {
    "resnet18": _RESNET,
    "resnet34": _RESNET,
    "resnet50": _RESNET,
    "resnet101": _RESNET,
    "resnet152": _RESNET,
    "vgg16": _VGG,
    "vgg16_bn": _VGG,
    "vgg19": _VGG,
    "vgg19_bn": _VGG,
    "densenet121": _DENSENET,
    "densenet169": _DENSENET,
    "densenet201": _DENSENET,
    "efficientnet_b0": _EFFICIENTNET,
    "efficientnet_b1": _EFFICIENTNET,
    "efficientnet_b2": _EFFICIENTNET,
    "efficientnet_b3": _EFFICIENTNET,
    "mobilenet_v2": _EFFICIENTNET,
    "mobilenet_v3_small": _MOBILENET_V3,
    "mobilenet_v3_large": _MOBILENET_V3,
}

ARCHITECTURES: tuple[str, ...] = tuple(_SPECS)


def arch_spec(arch: str) -> ArchSpec:
    """The table entry of ``arch`` (its head and Grad-CAM layer).

    Raises :class:`UnknownArchitecture` for a name not in :data:`ARCHITECTURES`."""
    try:
        return _SPECS[arch]
    except (KeyError, TypeError):
        raise UnknownArchitecture(arch) from None


def head_name(arch: str) -> str:
    """Dotted module path of the classifier layer for ``arch`` (e.g. ``"fc"``, ``"classifier.1"``)."""
    return arch_spec(arch).head


def _split_parent(model: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    parent_path, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    return parent, child


def head_layer(model: nn.Module, arch: str) -> nn.Linear:
    """The classifier ``nn.Linear`` of a model built by :func:`build_model`."""
    head = model.get_submodule(arch_spec(arch).head)
    if not isinstance(head, nn.Linear):
        raise IncompatibleWeights(
            f"Expected an nn.Linear classifier at {arch_spec(arch).head!r} of a {arch} model, "
            f"found {type(head).__name__}. Was the model built with build_model({arch!r}, ...)?"
        )
    return head


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------


def build_model(
    arch: str,
    num_classes: int,
    *,
    weights: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Build ``arch`` with a fresh ``num_classes``-way head.

    ``weights``:
      - ``None``: random initialisation (tests, or loading a checkpoint afterwards);
      - ``"imagenet"``: torchvision's ImageNet weights from ``$TORCH_HOME/hub/checkpoints``,
        downloaded there if missing; raises :class:`MissingPretrainedWeights` when the file is
        missing and cannot be downloaded;
      - a path: a local backbone state dict, loaded non-strictly. The load report is logged and
        kept on the model as ``model.backbone_load_report`` (a :class:`BackboneLoadReport`).
    """
    arch_spec(arch)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")

    report: BackboneLoadReport | None = None
    if weights is None:
        model = get_model(arch, weights=None)
    elif isinstance(weights, str) and weights.lower() == "imagenet":
        model = build_imagenet(arch)
    else:
        model = get_model(arch, weights=None)
        report = load_backbone_weights(model, weights)
        logger.info("%s backbone: %s", arch, report.summary())

    replace_head(model, arch, num_classes)
    if report is not None:
        # Not a Module or Tensor, so it stays out of state_dict().
        model.backbone_load_report = report
    return model


def replace_head(model: nn.Module, arch: str, num_classes: int) -> nn.Module:
    """Swap the classifier layer for a fresh ``nn.Linear(in_features, num_classes)``, in place."""
    old = head_layer(model, arch)
    new = nn.Linear(
        old.in_features,
        num_classes,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    parent, child = _split_parent(model, arch_spec(arch).head)
    setattr(parent, child, new)
    return model


def head_parameters(model: nn.Module, arch: str) -> list[nn.Parameter]:
    """Parameters of the classifier head (what the "head only" training strategy trains)."""
    return list(head_layer(model, arch).parameters())


def default_preprocessing(arch: str) -> Preprocessing:
    """ImageNet mean/std and the input size torchvision evaluates ``arch`` at (224 for most)."""
    arch_spec(arch)
    transforms = get_model_weights(arch).DEFAULT.transforms()
    crop = transforms.crop_size
    size = int(crop[0] if isinstance(crop, (list, tuple)) else crop)
    return Preprocessing(
        input_size=size,
        mean=tuple(float(x) for x in transforms.mean),  # type: ignore[arg-type]
        std=tuple(float(x) for x in transforms.std),  # type: ignore[arg-type]
    )


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
