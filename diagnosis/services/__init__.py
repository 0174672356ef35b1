"""Every write of the diagnosis app, as functions named <entity>_<action> (see STYLE.md).

- uploads: study_upload, study_upload_many (web process; never imports torch)
- patients: the patient an upload belongs to (fields checked, identity matched)
- predictions: re-runs, predictions waiting for a model, the study's stored result
- reanalysis: re-reading studies with another version (history kept), behind live uploads
- readings: signed readings and amendments
- heatmaps: per-class heatmaps on demand (the request)
- pacs: which results go to the PACS as DICOM SR and SC, and when (sent by diagnosis.worker.pacs)
- webhooks: critical-finding webhook deliveries (created when a result is flagged), resend

Sending tasks is diagnosis.dispatch; what a worker does with them is diagnosis.worker.
"""

from __future__ import annotations

from diagnosis.services.heatmaps import class_heatmap_request
from diagnosis.services.pacs import (
    PacsResendRefused,
    pacs_export_resend,
    pacs_exports_for_reading,
    pacs_exports_for_result,
)
from diagnosis.services.patients import IdentityMismatch, UploadFieldRejected
from diagnosis.services.predictions import (
    prediction_rerun,
    predictions_assign_waiting,
    storage_delete_quietly,
    studies_restore_for_version,
    study_flag_from_prediction,
    study_result_store,
)
from diagnosis.services.readings import (
    ReadingAgreeRefused,
    ReadingRejected,
    ReadingStale,
    reading_sign,
)
from diagnosis.services.reanalysis import (
    REANALYSIS_PRIORITY,
    ReanalysisOutcome,
    ReanalysisRefused,
    studies_reanalyse_open,
    study_reanalyse,
)
from diagnosis.services.uploads import (
    StorageUnavailable,
    UploadResult,
    study_upload,
    study_upload_many,
)
from diagnosis.services.webhooks import WebhookResendRefused, webhook_delivery_resend

__all__ = [
    "IdentityMismatch",
    "PacsResendRefused",
    "REANALYSIS_PRIORITY",
    "ReanalysisOutcome",
    "ReanalysisRefused",
    "ReadingAgreeRefused",
    "ReadingRejected",
    "ReadingStale",
    "StorageUnavailable",
    "UploadFieldRejected",
    "UploadResult",
    "WebhookResendRefused",
    "class_heatmap_request",
    "pacs_export_resend",
    "pacs_exports_for_reading",
    "pacs_exports_for_result",
    "prediction_rerun",
    "predictions_assign_waiting",
    "reading_sign",
    "studies_reanalyse_open",
    "storage_delete_quietly",
    "studies_restore_for_version",
    "study_flag_from_prediction",
    "study_reanalyse",
    "study_result_store",
    "study_upload",
    "study_upload_many",
    "webhook_delivery_resend",
]
