"""The ML core: backbones, preprocessing, checkpoints, inference and Grad-CAM. No Django here.

Names are re-exported lazily: ``import training.ml`` is cheap and does not import torch, so code
that only needs :class:`Preprocessing` (forms, settings checks) stays torch-free. The first access
to a name imports the module that defines it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .architectures import (
        ARCHITECTURES,
        BackboneLoadReport,
        IncompatibleWeights,
        InvalidWeightsFile,
        MissingPretrainedWeights,
        MLError,
        UnknownArchitecture,
        build_model,
        default_preprocessing,
        gradcam_target_layer,
        head_parameters,
        load_backbone_weights,
        prepare_for_cam,
        replace_head,
    )
    from .checkpoint import (
        CHECKPOINT_FORMAT,
        CheckpointMeta,
        CheckpointNotFound,
        build_for_inference,
        file_sha256,
        load_weights_file,
        save_checkpoint,
    )
    from .inference import PredictionResult, Predictor, cam_to_heatmap_rgba, render_overlay
    from .preprocessing import Preprocessing, batch_model_input, to_model_input

__all__ = [
    "ARCHITECTURES",
    "BackboneLoadReport",
    "CHECKPOINT_FORMAT",
    "CheckpointMeta",
    "CheckpointNotFound",
    "IncompatibleWeights",
    "InvalidWeightsFile",
    "MLError",
    "MissingPretrainedWeights",
    "PredictionResult",
    "Predictor",
    "Preprocessing",
    "UnknownArchitecture",
    "batch_model_input",
    "build_for_inference",
    "build_model",
    "cam_to_heatmap_rgba",
    "default_preprocessing",
    "file_sha256",
    "gradcam_target_layer",
    "head_parameters",
    "load_backbone_weights",
    "load_weights_file",
    "prepare_for_cam",
    "render_overlay",
    "replace_head",
    "save_checkpoint",
    "to_model_input",
]

_MODULE_OF: dict[str, str] = {
    "ARCHITECTURES": "architectures",
    "BackboneLoadReport": "architectures",
    "IncompatibleWeights": "architectures",
    "InvalidWeightsFile": "architectures",
    "MLError": "architectures",
    "MissingPretrainedWeights": "architectures",
    "UnknownArchitecture": "architectures",
    "build_model": "architectures",
    "default_preprocessing": "architectures",
    "gradcam_target_layer": "architectures",
    "head_parameters": "architectures",
    "load_backbone_weights": "architectures",
    "prepare_for_cam": "architectures",
    "replace_head": "architectures",
    "CHECKPOINT_FORMAT": "checkpoint",
    "CheckpointMeta": "checkpoint",
    "CheckpointNotFound": "checkpoint",
    "build_for_inference": "checkpoint",
    "file_sha256": "checkpoint",
    "load_weights_file": "checkpoint",
    "save_checkpoint": "checkpoint",
    "PredictionResult": "inference",
    "Predictor": "inference",
    "cam_to_heatmap_rgba": "inference",
    "render_overlay": "inference",
    "Preprocessing": "preprocessing",
    "batch_model_input": "preprocessing",
    "to_model_input": "preprocessing",
}


def __getattr__(name: str) -> Any:
    module_name = _MODULE_OF.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
