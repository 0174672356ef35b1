"""The de-identified export page (admins): read studies -> a training dataset."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from cxrweb.audit.models import AuditEvent
from cxrweb.permissions import model_admin_required
from diagnosis.audit import audit_view
from diagnosis.export_models import DatasetExport
from diagnosis.services.exports import ExportRejected, dataset_export_create, export_candidates


@require_http_methods(["GET", "HEAD", "POST"])
@model_admin_required
def exports(request):
    from diagnosis.forms import ExportForm

    form = ExportForm(request.POST or request.GET or None)
    dates = form.cleaned_data if form.is_bound and form.is_valid() else {}
    if request.method == "POST" and form.is_valid():
        try:
            export = dataset_export_create(
                name=form.cleaned_data["name"],
                study_ids=form.cleaned_data["study"],
                actor=request.user,
                request=request,
            )
        except ExportRejected as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"Export {export.name} queued: the training worker writes it and registers it "
                "as a dataset.",
            )
            return redirect("diagnosis:exports")
    candidates = export_candidates(
        signed_from=dates.get("signed_from"), signed_to=dates.get("signed_to")
    )[:500]
    if candidates:  # accession numbers and signed labels: one event names every listed study
        audit_view(
            request,
            AuditEvent.Action.VIEW_STUDY,
            None,
            view="exports",
            study=None,
            detail={
                "studies": [c.study.pk for c in candidates],
                "patients": [c.study.patient.mrn for c in candidates],
            },
        )
    return render(
        request,
        "diagnosis/exports.html",
        {
            "form": form,
            "candidates": candidates,
            "exports": DatasetExport.objects.select_related("dataset", "created_by")[:50],
        },
    )
