"""Browser views: validate with a form, call one service, render or redirect. No torch here."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import DatabaseError
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from diagnosis import selectors, services
from diagnosis.forms import StudyUploadForm
from diagnosis.imaging import UploadRejected
from diagnosis.models import Image, Prediction, Study
from diagnosis.permissions import clinical_user_required
from training.models import ModelVersion

logger = logging.getLogger(__name__)


@require_GET
@clinical_user_required
def worklist(request):
    studies = selectors.study_list()
    q = request.GET.get("q", "").strip()
    if q:
        from django.db.models import Q

        studies = studies.filter(
            Q(patient__mrn__icontains=q) | Q(accession_number__icontains=q)
            | Q(patient__name__icontains=q)
        )
    page = Paginator(studies, 25).get_page(request.GET.get("page"))
    rows = []
    for study in page:
        predictions = selectors.study_predictions(study)
        rows.append({"study": study, "prediction": predictions[0] if predictions else None})
    pending = any(r["prediction"] and not r["prediction"].is_finished for r in rows)
    return render(request, "diagnosis/worklist.html", {
        "page": page, "rows": rows, "q": q, "pending": pending,
        "production": ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first(),
    })


@require_http_methods(["GET", "POST"])
@clinical_user_required
def upload(request):
    if request.method == "POST":
        form = StudyUploadForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                result = services.study_upload(uploaded_by=request.user, **form.upload_kwargs())
            except UploadRejected as exc:
                form.add_error("image", str(exc))
            except DatabaseError:
                logger.exception("upload failed: database unavailable")
                form.add_error(None, "The database is unavailable; nothing was stored. Try again shortly.")
                return render(request, "diagnosis/upload.html", {"form": form}, status=503)
            else:
                messages.success(request, f"Uploaded {result.study.accession_number}; analysis queued.")
                return redirect(result.study)
        return render(request, "diagnosis/upload.html", {"form": form}, status=400)
    return render(request, "diagnosis/upload.html", {"form": StudyUploadForm()})


def _study_context(study: Study) -> dict:
    images = []
    for image in study.images.all():
        predictions = list(image.predictions.all())
        images.append({"image": image, "prediction": predictions[0] if predictions else None,
                       "history": predictions[1:]})
    pending = any(i["prediction"] and not i["prediction"].is_finished for i in images)
    return {"study": study, "images": images, "pending": pending}


def _study_or_404(pk: int) -> Study:
    try:
        return selectors.study_detail(pk)
    except Study.DoesNotExist as exc:
        raise Http404("No such study.") from exc


@require_GET
@clinical_user_required
def study_detail(request, pk: int):
    return render(request, "diagnosis/study.html", _study_context(_study_or_404(pk)))


@require_GET
@clinical_user_required
def study_results(request, pk: int):
    """The results panel alone: the study page polls it until every prediction has finished."""
    response = render(request, "diagnosis/_results.html", _study_context(_study_or_404(pk)))
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@clinical_user_required
def prediction_rerun(request, pk: int):
    prediction = get_object_or_404(Prediction.objects.select_related("image"), pk=pk)
    try:
        services.prediction_rerun(prediction=prediction)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "The analysis was queued again.")
    return redirect("diagnosis:study", pk=prediction.image.study_id)


def _file_response(f, content_type: str, *, download_name: str | None = None) -> HttpResponse:
    try:
        handle = f.open("rb")
    except FileNotFoundError as exc:
        raise Http404("The file is missing from storage.") from exc
    response = FileResponse(handle, content_type=content_type, as_attachment=bool(download_name),
                            filename=download_name or "")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
@clinical_user_required
def image_display(request, pk: int):
    image = get_object_or_404(Image, pk=pk)
    return _file_response(image.display, "image/png")


@require_GET
@clinical_user_required
def image_original(request, pk: int):
    image = get_object_or_404(Image.objects.select_related("study"), pk=pk)
    ext = {"PNG": "png", "JPEG": "jpg", "DICOM": "dcm"}[image.format]
    ctype = {"PNG": "image/png", "JPEG": "image/jpeg", "DICOM": "application/dicom"}[image.format]
    return _file_response(image.original, ctype,
                          download_name=f"{image.study.accession_number}-{image.pk}.{ext}")


@require_GET
@clinical_user_required
def prediction_heatmap(request, pk: int):
    prediction = get_object_or_404(Prediction, pk=pk, status=Prediction.Status.DONE)
    return _file_response(prediction.heatmap, "image/png")


@require_GET
@clinical_user_required
def prediction_overlay(request, pk: int):
    prediction = get_object_or_404(Prediction, pk=pk, status=Prediction.Status.DONE)
    return _file_response(prediction.overlay, "image/png")
