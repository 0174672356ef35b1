"""Every write of the diagnosis app, as functions named <entity>_<action> (see STYLE.md).

- uploads: study_upload, study_upload_many (web process; never imports torch)
- predictions: queueing, the worker side (claim, run), re-runs, the reconciler
- reanalysis: re-reading studies with another version (history kept), behind live uploads
- readings: signed readings and amendments
- heatmaps: per-class heatmaps on demand
"""

from __future__ import annotations

from diagnosis.services.heatmaps import class_heatmap_request, class_heatmap_run
from diagnosis.services.predictions import (
    PredictionFailure,
    prediction_claim,
    prediction_enqueue_on_commit,
    prediction_rerun,
    prediction_run,
    predictions_assign_waiting,
    predictions_reconcile,
    studies_restore_for_version,
    study_flag_from_prediction,
    study_result_store,
)
from diagnosis.services.readings import ReadingRejected, ReadingStale, reading_sign
from diagnosis.services.reanalysis import (
    REANALYSIS_PRIORITY,
    ReanalysisOutcome,
    ReanalysisRefused,
    studies_reanalyse_open,
    study_reanalyse,
)
from diagnosis.services.uploads import (
    IdentityMismatch,
    StorageUnavailable,
    UploadFieldRejected,
    UploadResult,
    study_upload,
    study_upload_many,
)

__all__ = [
    "IdentityMismatch",
    "PredictionFailure",
    "REANALYSIS_PRIORITY",
    "ReanalysisOutcome",
    "ReanalysisRefused",
    "ReadingRejected",
    "ReadingStale",
    "StorageUnavailable",
    "UploadFieldRejected",
    "UploadResult",
    "class_heatmap_request",
    "class_heatmap_run",
    "prediction_claim",
    "prediction_enqueue_on_commit",
    "prediction_rerun",
    "prediction_run",
    "predictions_assign_waiting",
    "predictions_reconcile",
    "reading_sign",
    "studies_reanalyse_open",
    "studies_restore_for_version",
    "study_flag_from_prediction",
    "study_reanalyse",
    "study_result_store",
    "study_upload",
    "study_upload_many",
]
