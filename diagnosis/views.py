"""Browser views: validate with a form, call one service, render or redirect. No torch here."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db import DatabaseError
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit
from cxrweb.permissions import clinical_user_required, model_admin_required
from cxrweb.responses import csv_response, download_name, private_file_response, set_attachment
from diagnosis import reports, results, selectors, services
from diagnosis.audit import audit_upload, audit_upload_rejected, audit_view
from diagnosis.forms import ReadingForm, StudyUploadForm, WorklistFilterForm
from diagnosis.models import ClassHeatmap, Image, Prediction, Reading, Study
from training.ml.imaging import UploadRejected
from training.models import ModelVersion

logger = logging.getLogger(__name__)
Action = AuditEvent.Action

# Read-only views take GET and HEAD (require_safe). A HEAD runs the view as its GET does and only
# loses the body, so it is audited as the GET is: it still tells that a patient's file exists.


def _worklist_filters(request) -> tuple[WorklistFilterForm, dict]:
    form = WorklistFilterForm(request.GET or None, findings=selectors.known_findings())
    filters = form.cleaned_data if form.is_valid() else {}
    return form, {k: v for k, v in filters.items() if v}


def _worklist_table(request, *, view: str) -> dict:
    """The worklist table's context (rows of the requested filters and page), audited as `view`."""
    form, filters = _worklist_filters(request)
    page = Paginator(selectors.worklist(**filters), 25).get_page(request.GET.get("page"))
    rows = []
    for study in page:
        predictions = selectors.study_predictions(study)
        readings = selectors.study_readings(study)
        rows.append({"study": study, "result": selectors.study_result(study),
                     # a study waiting for a model version says so in its status
                     "waiting": any(p.is_waiting_for_model for p in predictions),
                     "reading": readings[0] if readings else None})
    if rows:  # the page lists these patients' studies and results: one event names them all
        audit_view(request, Action.VIEW_STUDY, None, view=view, study=None, detail={
            "studies": [r["study"].pk for r in rows],
            "patients": [r["study"].patient.mrn for r in rows],
        })
    query = request.GET.copy()
    query.pop("page", None)
    return {"form": form, "page": page, "rows": rows, "query": query.urlencode()}


@require_safe
@clinical_user_required
def worklist(request):
    token = selectors.worklist_token()  # before the rows: a change while they are read shows next
    context = {**_worklist_table(request, view="worklist"), "token": token}
    context["production"] = ModelVersion.objects.filter(
        status=ModelVersion.Status.PRODUCTION).first()
    return render(request, "diagnosis/worklist.html", context)


@require_safe
@never_cache
@clinical_user_required
def worklist_rows(request):
    """The worklist's table alone (same filters and page), which the open page fetches when
    worklist_changes says something changed. Patient data: audited as the page is, a repeat of
    the same rows within the coalescing window being the one event already written."""
    return render(request, "diagnosis/_worklist_table.html",
                  _worklist_table(request, view="worklist-live"))


@require_safe
@never_cache
@clinical_user_required
def worklist_changes(request):
    """GET ?since=TOKEN[&filters]: {token, changed, new}, polled by the open worklist. `new`
    counts the studies matching the filters uploaded since TOKEN. No patient data: not audited."""
    since = request.GET.get("since", "")
    token = selectors.worklist_token()
    new = 0
    if token.partition(".")[0] != since.partition(".")[0]:  # a study was uploaded since
        new = selectors.worklist_new_count(since=since, filters=_worklist_filters(request)[1])
    return JsonResponse({"token": token, "changed": token != since, "new": new})


@require_http_methods(["GET", "POST"])
@clinical_user_required
def upload(request):
    """Several files at once with JavaScript (each posted to the API); one file without it."""
    context = {"max_upload_mb": settings.CXR_MAX_UPLOAD_BYTES // (1024 * 1024)}
    if request.method == "POST":
        form = StudyUploadForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                kwargs = form.upload_kwargs()
                if len(form.image_files()) > 1:  # several files without JavaScript: one study
                    del kwargs["data"], kwargs["filename"]
                    uploaded = services.study_upload_many(uploaded_by=request.user,
                                                          files=form.upload_files(), **kwargs)
                else:
                    uploaded = [services.study_upload(uploaded_by=request.user, **kwargs)]
                result = uploaded[0]
            except services.IdentityMismatch as exc:
                # The confirm step: both sets of details and the box to tick. The file is not
                # kept between the two posts, so it is chosen again.
                audit_upload_rejected(request, exc)
                return render(request, "diagnosis/upload.html",
                              {**context, "form": form, "identity_mismatch": exc}, status=409)
            except UploadRejected as exc:
                audit_upload_rejected(request, exc)
                form.add_error(getattr(exc, "field", "image"), str(exc))
            except DatabaseError:
                logger.exception("upload failed: database unavailable")
                form.add_error(
                    None, "The database is unavailable; nothing was stored. Try again shortly."
                )
                return render(request, "diagnosis/upload.html", {**context, "form": form},
                              status=503)
            except services.StorageUnavailable as exc:
                form.add_error(None, str(exc))
                return render(request, "diagnosis/upload.html", {**context, "form": form},
                              status=503)
            else:
                for each in uploaded:
                    audit_upload(request, each, via="browser")
                messages.success(
                    request, f"Uploaded {result.study.accession_number}"
                    f"{f' ({len(uploaded)} images)' if len(uploaded) > 1 else ''}; analysis queued."
                )
                return redirect(result.study)
        return render(request, "diagnosis/upload.html", {**context, "form": form}, status=400)
    return render(request, "diagnosis/upload.html", {**context, "form": StudyUploadForm()})


def _study_or_404(pk: int) -> Study:
    try:
        return selectors.study_detail(pk)
    except Study.DoesNotExist as exc:
        raise Http404("No such study.") from exc


def _study_context(study: Study) -> dict:
    """The study's one result (diagnosis.results) and, beside each image, its own result."""
    images = []
    for image in study.images.all():
        predictions = list(image.predictions.all())
        prediction = predictions[0] if predictions else None  # the image's current one
        heatmaps = {}
        if prediction is not None and prediction.status == Prediction.Status.DONE:
            heatmaps = {h.class_label: h for h in prediction.heatmaps.all()}
        images.append({"image": image, "prediction": prediction, "history": predictions[1:],
                       "heatmaps": heatmaps, "bars": results.prediction_bars(prediction)})
    pending = any(
        (i["prediction"] and not i["prediction"].is_finished)
        or any(h.status == ClassHeatmap.Status.QUEUED for h in i["heatmaps"].values())
        for i in images
    )
    result = selectors.study_result(study)
    driving_view = next((n for n, i in enumerate(images, 1)
                         if i["image"].pk == result.driving_image), None)
    predictions = selectors.study_predictions(study)
    return {"study": study, "images": images, "pending": pending, "result": result,
            "driving_view": driving_view,
            "reanalysis": results.reanalysis_notice(predictions),
            # What "re-analyse with the production version" would do: offered unless every
            # view's current prediction is already that version's (and did not fail).
            "production_version": _reanalysable_with(predictions)}


def _reanalysable_with(predictions: list[Prediction]) -> ModelVersion | None:
    version = ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).only(
        "pk", "name").first()
    current = results.current_predictions(predictions)
    if version is None or not current or all(
        p.model_version_id == version.pk and p.status != Prediction.Status.FAILED for p in current
    ):
        return None
    return version


def _reading_context(study: Study, form: ReadingForm | None = None) -> dict:
    readings = selectors.study_readings(study)
    current = next((r for r in readings if r.is_current), None)
    predictions = selectors.study_predictions(study)
    result = results.study_result(predictions)
    form = form or ReadingForm(classes=_reading_classes(result, predictions),
                               has_result=result.label is not None,
                               initial={"amends": current.pk if current else None,
                                        "prediction_ids": ",".join(
                                            str(i) for i in result.prediction_ids)})
    return {"readings": readings, "current_reading": current, "reading_form": form,
            "reading_result": result,
            # The page swaps in a fresh reading form when the views it waits for finish.
            "reading_awaits_result": result.status == "pending"
            and any(not p.is_finished and p.model_version_id
                    for p in results.current_predictions(predictions))}


def _reading_classes(result: results.StudyResult, predictions: list[Prediction]) -> list[str]:
    """The labels a reading offers: the classes of the study result's model; without a result
    (still queued, failed), those of the model an image was sent to, else of the production
    model."""
    version = result.driving_prediction.model_version if result.driving_prediction else next(
        (p.model_version for p in predictions if p.model_version_id), None
    ) or ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()
    classes = list(version.class_labels) if version else []
    return classes + [c for c in result.probabilities if c not in classes]


@require_safe
@clinical_user_required
def study_detail(request, pk: int):
    study = _study_or_404(pk)
    audit_view(request, Action.VIEW_STUDY, study, view="page", study=study)
    return render(request, "diagnosis/study.html",
                  {**_study_context(study), **_reading_context(study)})


@require_safe
@clinical_user_required
def study_results(request, pk: int):
    """The results panel alone: the study page polls it until every prediction has finished."""
    study = _study_or_404(pk)
    audit_view(request, Action.VIEW_STUDY, study, view="results", study=study)
    return render(request, "diagnosis/_results.html", _study_context(study))


@require_safe
@clinical_user_required
def study_reading(request, pk: int):
    """The reading section alone: the study page swaps it in once the model's result arrives."""
    study = _study_or_404(pk)
    audit_view(request, Action.VIEW_STUDY, study, view="reading", study=study)
    return render(request, "diagnosis/_reading.html", {"study": study, **_reading_context(study)})


@require_POST
@clinical_user_required
def reading_sign(request, pk: int):
    """Sign against the result the form showed (its prediction ids): a result that changed
    meanwhile is refused (409) and the page shows the current one to review again."""
    study = _study_or_404(pk)
    predictions = selectors.study_predictions(study)
    result = results.study_result(predictions)
    form = ReadingForm(request.POST, classes=_reading_classes(result, predictions),
                       has_result=result.label is not None)
    status = 400
    if form.is_valid():
        amends = None
        if form.cleaned_data.get("amends"):
            amends = Reading.objects.filter(pk=form.cleaned_data["amends"], study=study).first()
        try:
            reading = services.reading_sign(
                study=study, radiologist=request.user,
                final_label=form.cleaned_data.get("final_label") or "",
                agrees=form.cleaned_data["decision"] == "agree",
                notes=form.cleaned_data.get("notes") or "", amends=amends,
                prediction_ids=form.cleaned_data["prediction_ids"],
            )
        except services.ReadingStale as exc:
            # The form now carries the current result's ids: signing again signs what is shown.
            data = request.POST.copy()
            data["prediction_ids"] = ",".join(str(i) for i in result.prediction_ids)
            form = ReadingForm(data, classes=_reading_classes(result, predictions),
                               has_result=result.label is not None)
            form.is_valid()
            form.add_error(None, str(exc))
            status = 409
        except services.ReadingRejected as exc:
            form.add_error(None, str(exc))
        else:
            audit(request, Action.READING, reading,
                  detail={"final_label": reading.final_label,
                          "agrees": reading.agrees_with_model,
                          "amends": amends.pk if amends else None,
                          "prediction_ids": reading.prediction_ids})
            messages.success(request, f"Reading signed: {reading.final_label}.")
            return redirect(study)
    return render(request, "diagnosis/study.html",
                  {**_study_context(study), **_reading_context(study, form)}, status=status)


@require_POST
@clinical_user_required
def class_heatmap_request(request, pk: int):
    prediction = get_object_or_404(Prediction.objects.select_related("model_version", "image"),
                                   pk=pk)
    label = request.POST.get("class_label", "")
    try:
        heatmap = services.class_heatmap_request(prediction=prediction, class_label=label)
    except ValueError as exc:
        if request.headers.get("X-Requested-With") == "fetch":
            return JsonResponse({"error": str(exc)}, status=400)
        messages.error(request, str(exc))
        return redirect("diagnosis:study", pk=prediction.image.study_id)
    if request.headers.get("X-Requested-With") == "fetch":
        return JsonResponse({"id": heatmap.pk, "status": heatmap.status})
    return redirect("diagnosis:study", pk=prediction.image.study_id)


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


@require_POST
@clinical_user_required
def study_reanalyse(request, pk: int):
    """Re-analyse the study's views with the production version; earlier results stay as
    history, and a reading must be signed against the new result."""
    study = _study_or_404(pk)
    try:
        outcome = services.study_reanalyse(study=study)
    except services.ReanalysisRefused as exc:
        messages.error(request, str(exc))
        return redirect("diagnosis:study", pk=study.pk)
    version = ModelVersion.objects.get(status=ModelVersion.Status.PRODUCTION)
    audit(request, Action.REANALYSE, study,
          detail={"scope": "study", **outcome.as_detail(version)})
    if outcome.queued:
        messages.success(request, f"{outcome.queued} image(s) queued for re-analysis with "
                                  f"{version.name}; the earlier results are kept.")
    else:
        messages.info(request, f"Already analysed with {version.name}: nothing to re-run.")
    return redirect("diagnosis:study", pk=study.pk)


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
    return private_file_response(image.original, ctype, download_name=download_name(
        image.study.accession_number, f"-{image.pk}.{ext}", fallback="image"))


def _done_prediction_or_404(pk: int) -> Prediction:
    return get_object_or_404(Prediction.objects.select_related("image__study__patient"), pk=pk,
                             status=Prediction.Status.DONE)


@require_safe
@clinical_user_required
def prediction_heatmap(request, pk: int):
    """The heatmap: the transparent colour map alone, drawn over the X-ray on the study page."""
    prediction = _done_prediction_or_404(pk)
    audit_view(request, Action.VIEW_IMAGE, prediction, view="heatmap",
               study=prediction.image.study)
    return private_file_response(prediction.heatmap, "image/png")


@require_safe
@clinical_user_required
def prediction_overlay(request, pk: int):
    """The overlay: the X-ray with the colour map blended in (the printable report's picture)."""
    prediction = _done_prediction_or_404(pk)
    audit_view(request, Action.VIEW_IMAGE, prediction, view="overlay",
               study=prediction.image.study)
    return private_file_response(prediction.overlay, "image/png")


@require_safe
@clinical_user_required
def class_heatmap_file(request, pk: int):
    heatmap = get_object_or_404(
        ClassHeatmap.objects.select_related("prediction__image__study__patient"),
        pk=pk, status=ClassHeatmap.Status.DONE,
    )
    audit_view(request, Action.VIEW_IMAGE, heatmap, view="class_heatmap",
               study=heatmap.prediction.image.study, detail={"class": heatmap.class_label})
    return private_file_response(heatmap.file, "image/png")


@require_safe
@clinical_user_required
def study_report(request, pk: int):
    """The printable report (the browser's print dialog makes paper or PDF from it)."""
    study = _study_or_404(pk)
    audit(request, Action.REPORT, study, detail={"format": "html", "study": study.pk})
    return render(request, "diagnosis/report.html", reports.report_context(study))


@require_safe
@clinical_user_required
def study_report_pdf(request, pk: int):
    study = _study_or_404(pk)
    audit(request, Action.DOWNLOAD, study, detail={"file": "report.pdf", "study": study.pk})
    pdf = reports.render_pdf(study, generated_by=request.user)
    response = HttpResponse(pdf, content_type="application/pdf")
    set_attachment(response, download_name(f"report-{study.accession_number}", ".pdf"))
    response["Cache-Control"] = "no-store"
    return response


@require_safe
@model_admin_required
def agreement(request):
    return render(request, "diagnosis/agreement.html",
                  {"rows": selectors.agreement_by_version()})


@require_safe
@model_admin_required
def audit_log(request):
    from diagnosis.forms import AuditFilterForm

    form = AuditFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    events = selectors.audit_events(**{k: v for k, v in filters.items() if v})
    if request.GET.get("format") == "csv":
        audit(request, Action.EXPORT, detail={"filters": {k: str(v) for k, v in filters.items()
                                                          if v}})
        return _audit_csv(events)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "diagnosis/audit.html",
                  {"form": form, "page": page, "query": query.urlencode()})


def _audit_csv(events) -> StreamingHttpResponse:
    header = ["at", "username", "action", "object_type", "object_id", "patient_mrn",
              "ip_address", "user_agent", "path", "detail"]
    rows = ([e.at.isoformat(), e.username, e.action, e.object_type, e.object_id, e.patient_mrn,
             e.ip_address or "", e.user_agent, e.path, e.detail]
            for e in events.iterator(chunk_size=2000))
    return csv_response("audit-trail.csv", header, rows)


@require_safe
@clinical_user_required
def study_neighbours(request, pk: int):
    """The studies before and after this one in the worklist's reading order (the study page's
    j and k keys): the order is the worklist selector's own, not a copy of it. Links only, no
    patient data, so no audit event: the study page they lead to records its own view."""
    order = list(selectors.worklist().values_list("pk", flat=True))
    try:
        at = order.index(pk)
    except ValueError:
        raise Http404("No such study.") from None

    def link(index: int) -> str | None:
        return reverse("diagnosis:study", args=[order[index]]) if 0 <= index < len(order) else None

    response = JsonResponse({"previous": link(at - 1), "next": link(at + 1),
                             "position": at + 1, "count": len(order)})
    response["Cache-Control"] = "no-store"
    return response
