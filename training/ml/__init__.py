"""The ML core: backbones, preprocessing, checkpoints, inference, Grad-CAM, training. No Django.

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
    from .calibration import (
        choose_thresholds,
        expected_calibration_error,
        fit_temperature,
        reliability_bins,
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
    from .data import (
        CXRDataset,
        DatasetError,
        FolderScan,
        check_split,
        class_weights,
        duplicate_group_ids,
        duplicates_by_hash,
        make_loader,
        scan_image_folder,
        stratified_split,
        weighted_sampler,
    )
    from .inference import PredictionResult, Predictor, cam_to_heatmap_rgba, render_overlay
    from .metrics import (
        classification_report,
        roc_curves,
    )
    from .plots import (
        plot_confusion_matrix,
        plot_history,
        plot_reliability,
        plot_roc,
    )
    from .preprocessing import Preprocessing, batch_model_input, to_model_input
    from .train import (
        EvalOutput,
        FitResult,
        TrainConfig,
        apply_strategy,
        evaluate,
        evaluate_checkpoint,
        fit,
        train_one_epoch,
    )
    from .transforms import (
        eval_transform,
        train_transform,
    )

__all__ = [
    "ARCHITECTURES",
    "BackboneLoadReport",
    "CHECKPOINT_FORMAT",
    "CXRDataset",
    "CheckpointMeta",
    "CheckpointNotFound",
    "DatasetError",
    "EvalOutput",
    "FitResult",
    "FolderScan",
    "IncompatibleWeights",
    "InvalidWeightsFile",
    "MLError",
    "MissingPretrainedWeights",
    "PredictionResult",
    "Predictor",
    "Preprocessing",
    "TrainConfig",
    "UnknownArchitecture",
    "apply_strategy",
    "batch_model_input",
    "build_for_inference",
    "build_model",
    "cam_to_heatmap_rgba",
    "check_split",
    "choose_thresholds",
    "class_weights",
    "classification_report",
    "default_preprocessing",
    "duplicate_group_ids",
    "duplicates_by_hash",
    "eval_transform",
    "evaluate",
    "evaluate_checkpoint",
    "expected_calibration_error",
    "file_sha256",
    "fit",
    "fit_temperature",
    "gradcam_target_layer",
    "head_parameters",
    "load_backbone_weights",
    "load_weights_file",
    "make_loader",
    "plot_confusion_matrix",
    "plot_history",
    "plot_reliability",
    "plot_roc",
    "prepare_for_cam",
    "reliability_bins",
    "render_overlay",
    "replace_head",
    "roc_curves",
    "save_checkpoint",
    "scan_image_folder",
    "stratified_split",
    "to_model_input",
    "train_one_epoch",
    "train_transform",
    "weighted_sampler",
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
    "choose_thresholds": "calibration",
    "expected_calibration_error": "calibration",
    "fit_temperature": "calibration",
    "reliability_bins": "calibration",
    "CXRDataset": "data",
    "DatasetError": "data",
    "FolderScan": "data",
    "check_split": "data",
    "class_weights": "data",
    "duplicate_group_ids": "data",
    "duplicates_by_hash": "data",
    "make_loader": "data",
    "scan_image_folder": "data",
    "stratified_split": "data",
    "weighted_sampler": "data",
    "classification_report": "metrics",
    "roc_curves": "metrics",
    "plot_confusion_matrix": "plots",
    "plot_history": "plots",
    "plot_reliability": "plots",
    "plot_roc": "plots",
    "EvalOutput": "train",
    "FitResult": "train",
    "TrainConfig": "train",
    "apply_strategy": "train",
    "evaluate": "train",
    "evaluate_checkpoint": "train",
    "fit": "train",
    "train_one_epoch": "train",
    "eval_transform": "transforms",
    "train_transform": "transforms",
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
