"""The model page's calibrations: queue a recalibration (a training worker fits it), activate a
fitted one, and the panel the page polls while one is fitted."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from cxrweb.permissions import model_admin_required
from training.calibration_forms import CalibrationForm
from training.models import ModelCalibration
from training.services import CalibrationRejected, calibration_activate, calibration_request
from training.views.common import fragment
from training.views.versions import _version_context, _version_or_404, calibrations_context


def _back(version_pk: int) -> str:
    return reverse("training:version", args=[version_pk]) + "#calibrations"


@require_GET
@model_admin_required
def version_calibrations(request, pk: int):
    """The calibrations panel alone: the version page polls it while one is being fitted."""
    return fragment(
        request, "training/_calibrations_table.html", calibrations_context(_version_or_404(pk))
    )


@require_POST
@model_admin_required
def version_calibrate(request, pk: int):
    version = _version_or_404(pk)
    form = CalibrationForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        by_dataset = data["source"] == "dataset"
        try:
            calibration = calibration_request(
                version=version,
                dataset=data["dataset"] if by_dataset else None,
                split=data["split"] or "val",
                readings=None if by_dataset else data["readings"],
                target_sensitivity=data["target_sensitivity"],
                created_by=request.user,
            )
        except CalibrationRejected as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"Calibration {calibration.number} of {version.name} on {calibration.source} "
                "queued for a training worker; activate it here once it is fitted.",
            )
            return redirect(_back(version.pk))
    return render(
        request,
        "training/version.html",
        _version_context(version, calibration_form=form),
        status=400,
    )


@require_POST
@model_admin_required
def calibration_make_active(request, pk: int, number: int):
    calibration = get_object_or_404(ModelCalibration, version_id=pk, number=number)
    try:
        version = calibration_activate(calibration=calibration, actor=request.user, request=request)
    except CalibrationRejected as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"Calibration {number} is now active for {version.name}: the next images are read "
            f"at temperature {version.temperature:.3f} with its thresholds. Earlier results keep "
            "theirs.",
        )
    return redirect(_back(pk))
