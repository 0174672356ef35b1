"""The patient's files: the image as displayed, the original upload, and the model's heatmap and
overlay pictures. Every one is audited: the viewer's as coalesced views, the original as a download."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_safe

from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit
from cxrweb.permissions import clinical_user_required
from cxrweb.responses import download_name, private_file_response
from diagnosis.audit import audit_view
from diagnosis.models import ClassHeatmap, Image, Prediction

Action = AuditEvent.Action


@require_safe
@clinical_user_required
def image_display(request, pk: int):
    """The image as the viewer shows it. For an 8-bit PNG or JPEG upload this file is the original
    byte for byte, so it is audited like the original's download (as a coalesced view): it is no
    way around that download's audit event."""
    image = get_object_or_404(Image.objects.select_related("study__patient"), pk=pk)
    audit_view(request, Action.VIEW_IMAGE, image, view="display", study=image.study)
    return private_file_response(image.display, image.display_content_type)


@require_safe
@clinical_user_required
def image_original(request, pk: int):
    image = get_object_or_404(Image.objects.select_related("study__patient"), pk=pk)
    ext = {"PNG": "png", "JPEG": "jpg", "DICOM": "dcm"}[image.format]
    ctype = {"PNG": "image/png", "JPEG": "image/jpeg", "DICOM": "application/dicom"}[image.format]
    audit(request, Action.DOWNLOAD, image, detail={"file": "original", "study": image.study_id})
    return private_file_response(
        image.original,
        ctype,
        download_name=download_name(
            image.study.accession_number, f"-{image.pk}.{ext}", fallback="image"
        ),
    )


def _done_prediction_or_404(pk: int) -> Prediction:
    return get_object_or_404(
        Prediction.objects.select_related("image__study__patient"),
        pk=pk,
        status=Prediction.Status.DONE,
    )


@require_safe
@clinical_user_required
def prediction_heatmap(request, pk: int):
    """The heatmap: the transparent colour map alone, drawn over the X-ray on the study page."""
    prediction = _done_prediction_or_404(pk)
    audit_view(request, Action.VIEW_IMAGE, prediction, view="heatmap", study=prediction.image.study)
    return private_file_response(prediction.heatmap, "image/png")


@require_safe
@clinical_user_required
def prediction_overlay(request, pk: int):
    """The overlay: the X-ray with the colour map blended in (the printable report's picture)."""
    prediction = _done_prediction_or_404(pk)
    audit_view(request, Action.VIEW_IMAGE, prediction, view="overlay", study=prediction.image.study)
    return private_file_response(prediction.overlay, "image/png")


@require_safe
@clinical_user_required
def class_heatmap_file(request, pk: int):
    heatmap = get_object_or_404(
        ClassHeatmap.objects.select_related("prediction__image__study__patient"),
        pk=pk,
        status=ClassHeatmap.Status.DONE,
    )
    audit_view(
        request,
        Action.VIEW_IMAGE,
        heatmap,
        view="class_heatmap",
        study=heatmap.prediction.image.study,
        detail={"class": heatmap.class_label},
    )
    return private_file_response(heatmap.file, "image/png")
