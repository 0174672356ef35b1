"""The JSON shapes of the API's studies, predictions and readings (version 1)."""

from __future__ import annotations

from django.urls import reverse

from diagnosis import results, selectors
from diagnosis.models import PacsExport, Prediction, Reading, Study

# The prediction's two pictures, by the URL name each JSON field links to. "overlay": the X-ray
# with the colour map blended in; "heatmap layer": the transparent colour map alone. The last
# two are v1's names (heatmap.png was the overlay, cam.png the layer), kept for the clients that
# read them and deprecated.
PREDICTION_FILE_URLS = {
    "overlay_url": "api:prediction-overlay",
    "heatmap_layer_url": "api:prediction-heatmap-layer",
    "heatmap_url": "api:deprecated-heatmap-png",
    "cam_url": "api:deprecated-cam-png",
}


def prediction_json(prediction: Prediction, request) -> dict:
    version = prediction.model_version
    files = dict.fromkeys(PREDICTION_FILE_URLS)  # None until the files exist
    if prediction.status == Prediction.Status.DONE:
        for key, name in PREDICTION_FILE_URLS.items():
            files[key] = request.build_absolute_uri(reverse(name, args=[prediction.pk]))
    return {
        "id": prediction.pk,
        "url": request.build_absolute_uri(reverse("api:prediction", args=[prediction.pk])),
        "status": prediction.status,
        "message": prediction.status_message,
        "model_version": version.name if version else None,
        "model_version_id": version.pk if version else None,
        "architecture": version.architecture if version else None,
        "label": prediction.label or None,
        "probabilities": prediction.ordered_probabilities,
        "cam_class": prediction.cam_class or None,
        "cam_method": prediction.cam_method or None,
        **files,
        "error": prediction.error or None,
        "image_id": prediction.image_id,
        "study_id": prediction.image.study_id,
        "queued_at": prediction.queued_at,
        "started_at": prediction.started_at,
        "finished_at": prediction.finished_at,
        "compute_ms": prediction.compute_ms,
        "device": prediction.device or None,
        # How unlike the version's training data the image is (None score: no reference).
        "ood": prediction.ood,
    }


def study_json(
    study: Study, request, *, images: list | None = None, predictions: list | None = None
) -> dict:
    """A study with its images and predictions (queried unless the caller has them)."""
    images = list(study.images.all()) if images is None else images
    predictions = selectors.study_predictions(study) if predictions is None else predictions
    return {
        "id": study.pk,
        "url": request.build_absolute_uri(study.get_absolute_url()),
        "patient_id": study.patient.mrn,
        "accession_number": study.accession_number,
        "study_date": study.study_date,
        "view": study.view,
        "priority": study.get_priority_display(),
        "images": [
            {
                "id": image.pk,
                "format": image.format,
                "width": image.width,
                "height": image.height,
                "sha256": image.sha256,
                "duplicate_of_image": image.duplicate_of_id,
            }
            for image in images
        ],
        "predictions": [prediction_json(p, request) for p in predictions],
        # The study's one result (diagnosis.results.study_result): what every surface shows.
        "result": results.study_result(predictions).as_dict(),
        # The DICOM objects sent to the PACS for it (docs/operations.md, "Results to the PACS").
        "pacs_exports": [pacs_export_json(e, study) for e in selectors.study_pacs_exports(study)],
    }


def pacs_export_json(export: PacsExport, study: Study) -> dict:
    return {
        "kind": export.kind,
        "trigger": export.trigger,
        "status": export.status,
        "retrying": export.retrying,
        "attempts": export.attempts,
        "last_error": export.last_error,
        "sop_instance_uid": export.sop_instance_uid,
        "series_instance_uid": export.series_instance_uid,
        "study_instance_uid": study.study_instance_uid,
        "sent_at": export.sent_at,
    }


def reading_json(reading: Reading, request) -> dict:
    return {
        "id": reading.pk,
        "study_id": reading.study_id,
        "label": reading.final_label,
        "agree": reading.agrees_with_model,
        "notes": reading.notes,
        "prediction_ids": list(reading.prediction_ids),
        "model_version": reading.model_version.name if reading.model_version_id else None,
        "radiologist": reading.radiologist.get_username(),
        "amends": reading.amends_id,
        "signed_at": reading.signed_at,
        "study_url": request.build_absolute_uri(reverse("api:study", args=[reading.study_id])),
    }
