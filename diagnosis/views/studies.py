"""The study page and its polled panels, signing a reading, re-running and re-analysing, asking
for a class heatmap, and the printable report (HTML and PDF)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit
from cxrweb.permissions import clinical_user_required, model_admin_required
from cxrweb.responses import download_name, set_attachment
from diagnosis import reports, results, selectors, services
from diagnosis.audit import audit_view
from diagnosis.forms import ReadingForm
from diagnosis.models import ClassHeatmap, PacsExport, Prediction, Reading, Study
from training.models import ModelVersion

Action = AuditEvent.Action


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
        images.append(
            {
                "image": image,
                "prediction": prediction,
                "history": predictions[1:],
                "heatmaps": heatmaps,
                "bars": results.prediction_bars(prediction),
                "shown_label": results.prediction_shown_label(prediction),
            }
        )
    pending = any(
        (i["prediction"] and not i["prediction"].is_finished)
        or any(h.status == ClassHeatmap.Status.QUEUED for h in i["heatmaps"].values())
        for i in images
    )
    result = selectors.study_result(study)
    driving_view = next(
        (n for n, i in enumerate(images, 1) if i["image"].pk == result.driving_image), None
    )
    predictions = selectors.study_predictions(study)
    return {
        "study": study,
        "images": images,
        "pending": pending,
        "result": result,
        "driving_view": driving_view,
        "reanalysis": results.reanalysis_notice(predictions),
        # What "re-analyse with the production version" would do: offered unless every
        # view's current prediction is already that version's (and did not fail).
        "production_version": _reanalysable_with(predictions),
    }


def _reanalysable_with(predictions: list[Prediction]) -> ModelVersion | None:
    version = (
        ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION)
        .only("pk", "name")
        .first()
    )
    current = results.current_predictions(predictions)
    if (
        version is None
        or not current
        or all(
            p.model_version_id == version.pk and p.status != Prediction.Status.FAILED
            for p in current
        )
    ):
        return None
    return version


def _reading_context(study: Study, form: ReadingForm | None = None) -> dict:
    readings = selectors.study_readings(study)
    current = next((r for r in readings if r.is_current), None)
    predictions = selectors.study_predictions(study)
    result = results.study_result(predictions)
    form = form or ReadingForm(
        classes=_reading_classes(result, predictions),
        has_result=result.label is not None,
        unreliable=result.unreliable,
        initial={
            "amends": current.pk if current else None,
            "prediction_ids": ",".join(str(i) for i in result.prediction_ids),
        },
    )
    return {
        "readings": readings,
        "current_reading": current,
        "reading_form": form,
        "reading_result": result,
        # The page swaps in a fresh reading form when the views it waits for finish.
        "reading_awaits_result": result.status == "pending"
        and any(
            not p.is_finished and p.model_version_id
            for p in results.current_predictions(predictions)
        ),
    }


def _reading_classes(result: results.StudyResult, predictions: list[Prediction]) -> list[str]:
    """The labels a reading offers: the classes of the study result's model; without a result
    (still queued, failed), those of the model an image was sent to, else of the production
    model."""
    version = (
        result.driving_prediction.model_version
        if result.driving_prediction
        else next((p.model_version for p in predictions if p.model_version_id), None)
        or ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()
    )
    classes = list(version.class_labels) if version else []
    return classes + [c for c in result.probabilities if c not in classes]


@require_safe
@clinical_user_required
def study_detail(request, pk: int):
    study = _study_or_404(pk)
    audit_view(request, Action.VIEW_STUDY, study, view="page", study=study)
    return render(
        request,
        "diagnosis/study.html",
        {
            **_study_context(study),
            **_reading_context(study),
            "pacs_exports": selectors.study_pacs_exports(study),
        },
    )


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
    form = ReadingForm(
        request.POST,
        classes=_reading_classes(result, predictions),
        has_result=result.label is not None,
        unreliable=result.unreliable,
    )
    status = 400
    if form.is_valid():
        amends = None
        if form.cleaned_data.get("amends"):
            amends = Reading.objects.filter(pk=form.cleaned_data["amends"], study=study).first()
        try:
            reading = services.reading_sign(
                study=study,
                radiologist=request.user,
                final_label=form.cleaned_data.get("final_label") or "",
                agrees=form.cleaned_data["decision"] == "agree",
                notes=form.cleaned_data.get("notes") or "",
                amends=amends,
                prediction_ids=form.cleaned_data["prediction_ids"],
            )
        except services.ReadingStale as exc:
            # The form now carries the current result's ids: signing again signs what is shown.
            data = request.POST.copy()
            data["prediction_ids"] = ",".join(str(i) for i in result.prediction_ids)
            form = ReadingForm(
                data,
                classes=_reading_classes(result, predictions),
                has_result=result.label is not None,
                unreliable=result.unreliable,
            )
            form.is_valid()
            form.add_error(None, str(exc))
            status = 409
        except services.ReadingRejected as exc:
            form.add_error(None, str(exc))
        else:
            audit(
                request,
                Action.READING,
                reading,
                detail={
                    "final_label": reading.final_label,
                    "agrees": reading.agrees_with_model,
                    "amends": amends.pk if amends else None,
                    "prediction_ids": reading.prediction_ids,
                },
            )
            messages.success(request, f"Reading signed: {reading.final_label}.")
            return redirect(study)
    return render(
        request,
        "diagnosis/study.html",
        {**_study_context(study), **_reading_context(study, form)},
        status=status,
    )


@require_POST
@clinical_user_required
def class_heatmap_request(request, pk: int):
    prediction = get_object_or_404(
        Prediction.objects.select_related("model_version", "image"), pk=pk
    )
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
    audit(request, Action.REANALYSE, study, detail={"scope": "study", **outcome.as_detail(version)})
    if outcome.queued:
        messages.success(
            request,
            f"{outcome.queued} image(s) queued for re-analysis with "
            f"{version.name}; the earlier results are kept.",
        )
    else:
        messages.info(request, f"Already analysed with {version.name}: nothing to re-run.")
    return redirect("diagnosis:study", pk=study.pk)


@require_POST
@model_admin_required
def pacs_export_resend(request, pk: int):
    """Send a failed PACS export again (admins: after the PACS or its settings were fixed), as
    ``manage.py pacs_resend`` does."""
    export = get_object_or_404(PacsExport.objects.select_related("study__patient"), pk=pk)
    back = export.study.get_absolute_url() + "#pacs-exports"
    if export.status != PacsExport.Status.FAILED:
        messages.info(request, "That object has not failed: nothing to send again.")
        return redirect(back)
    try:
        services.pacs_export_resend(export=export)
    except services.PacsResendRefused as exc:
        messages.error(request, str(exc))
        return redirect(back)
    audit(
        request,
        Action.PACS_RESENT,
        export,
        detail={"export": export.pk, "kind": export.kind, "study": export.study_id},
    )
    messages.success(request, f"{export.get_kind_display()} queued to be sent to the PACS again.")
    return redirect(back)


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
