"""Every write of the training app (see STYLE.md): the model registry, datasets, training runs
and evaluations. Functions that train or evaluate import torch lazily: call them from a worker
or a management command, never from a web request."""

from __future__ import annotations

from training.services.calibrations import (
    CalibrationRejected,
    calibration_activate,
    calibration_execute,
    calibration_initial_create,
    calibration_request,
)
from training.services.datasets import DatasetRejected, dataset_register, dataset_scan
from training.services.evaluations import (
    EvaluationResult,
    evaluation_create,
    evaluation_execute,
    evaluation_predictions_write,
    evaluation_run,
)
from training.services.registry import (
    ModelImportError,
    PromotionNeedsExternalValidation,
    model_version_import,
    model_version_promote,
)
from training.services.runs import (
    TrainingRejected,
    training_run_cancel,
    training_run_create,
    training_run_execute,
    training_runs_reconcile,
)
from training.services.validation import version_validation, versions_validation

__all__ = [
    "CalibrationRejected",
    "calibration_activate",
    "calibration_execute",
    "calibration_initial_create",
    "calibration_request",
    "DatasetRejected",
    "EvaluationResult",
    "ModelImportError",
    "PromotionNeedsExternalValidation",
    "TrainingRejected",
    "dataset_register",
    "dataset_scan",
    "evaluation_create",
    "evaluation_execute",
    "evaluation_predictions_write",
    "evaluation_run",
    "model_version_import",
    "model_version_promote",
    "training_run_cancel",
    "training_run_create",
    "training_run_execute",
    "training_runs_reconcile",
    "version_validation",
    "versions_validation",
]
