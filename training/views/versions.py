"""The model version pages: the registry, one version with its evaluations, evaluating it,
promoting it (or rolling back to it), its checkpoint and its evaluations' plots."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit
from cxrweb.permissions import model_admin_required
from cxrweb.responses import download_name, private_file_response
from training import selectors
from training.calibration_forms import CalibrationForm
from training.forms import EvaluationForm, PromoteForm
from training.models import Evaluation, ModelVersion
from training.recipe import version_recipe
from training.services import (
    PromotionNeedsExternalValidation,
    evaluation_create,
    model_version_promote,
    versions_validation,
)
from training.views.common import (
    EVALUATION_PLOTS,
    PER_CLASS_COLUMNS,
    POLL_MS,
    fragment,
    metric_summary,
    per_class_rows,
    plot_links,
)
from training.views.validation import headline, validation_context

Action = AuditEvent.Action


def _safe_next(request, default: str) -> str:
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


@require_GET
@model_admin_required
def version_list(request):
    versions = list(selectors.version_list())
    validations = versions_validation(versions=versions)
    rows = [
        {
            "version": v,
            "headline": headline(validations[v.pk]),
            "external": len(validations[v.pk].external),
        }
        for v in versions
    ]
    return render(
        request,
        "training/versions.html",
        {"rows": rows, "promotions": selectors.promotion_history(10)},
    )


def _version_or_404(pk: int) -> ModelVersion:
    try:
        return selectors.version_detail(pk)
    except ModelVersion.DoesNotExist as exc:
        raise Http404("No such model version.") from exc


def _evaluations_context(version: ModelVersion) -> dict[str, Any]:
    evaluations = []
    for evaluation in selectors.version_evaluations(version):
        evaluations.append(
            {
                "evaluation": evaluation,
                "summary": {row["key"]: row["value"] for row in metric_summary(evaluation.metrics)},
                "plots": plot_links(evaluation, EVALUATION_PLOTS, "training:evaluation-plot"),
            }
        )
    return {
        "version": version,
        "evaluations": evaluations,
        "evaluations_pending": any(
            e["evaluation"].status in selectors.ACTIVE_EVALUATION for e in evaluations
        ),
    }


def _version_context(
    version: ModelVersion,
    *,
    evaluation_form: EvaluationForm | None = None,
    promote_form: PromoteForm | None = None,
    calibration_form: CalibrationForm | None = None,
    next_url: str = "",
) -> dict[str, Any]:
    return {
        **_evaluations_context(version),
        **calibrations_context(version, form=calibration_form),
        **validation_context(version),
        "summary": metric_summary(version.metrics),
        "per_class_columns": [label for _, label in PER_CLASS_COLUMNS],
        "per_class": per_class_rows(version.metrics, version.thresholds),
        "thresholds": [(label, version.threshold_for(label)) for label in version.class_labels],
        "thresholds_stored": bool(version.thresholds),
        "next": next_url,
        "promotions": selectors.version_promotions(version),
        "evaluation_form": evaluation_form or EvaluationForm(),
        "promote_form": promote_form or PromoteForm(),
        "download_name": checkpoint_name(version),
        "recipe": version_recipe(version),
        "poll_ms": POLL_MS,
    }


def calibrations_context(
    version: ModelVersion, *, form: CalibrationForm | None = None
) -> dict[str, Any]:
    calibrations = list(selectors.version_calibrations(version))
    return {
        "version": version,
        "calibrations": calibrations,
        "calibrations_pending": any(c.status in ("queued", "running") for c in calibrations),
        "calibration_form": form or CalibrationForm(),
    }


def checkpoint_name(version: ModelVersion) -> str:
    return download_name(version.name, f"-{version.sha256[:12]}.pt", fallback="model")


@require_GET
@model_admin_required
def version_detail(request, pk: int):
    return render(request, "training/version.html", _version_context(_version_or_404(pk)))


@require_GET
@model_admin_required
def version_evaluations(request, pk: int):
    """The evaluations panel alone: the version page polls it while evaluations run."""
    return fragment(
        request, "training/_evaluations.html", _evaluations_context(_version_or_404(pk))
    )


@require_POST
@model_admin_required
def version_evaluate(request, pk: int):
    version = _version_or_404(pk)
    form = EvaluationForm(request.POST)
    if form.is_valid():
        try:
            evaluation = evaluation_create(
                version=version,
                dataset=form.cleaned_data["dataset"],
                split=form.cleaned_data["split"],
                created_by=request.user,
                skip_unknown=form.cleaned_data["skip_unknown_classes"],
            )
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"Evaluation of {version.name} on {evaluation.dataset.name} "
                f"({evaluation.split}) queued for a training worker.",
            )
            return redirect(reverse("training:version", args=[version.pk]) + "#evaluations")
    return render(
        request,
        "training/version.html",
        _version_context(version, evaluation_form=form),
        status=400,
    )


@require_POST
@model_admin_required
def version_promote(request, pk: int):
    version = _version_or_404(pk)
    default = reverse("training:version", args=[version.pk])
    if version.is_production:
        messages.info(request, f"{version.name} is already in production.")
        return redirect(_safe_next(request, default))
    form = PromoteForm(request.POST)
    if not form.is_valid():
        # Keep where the form came from (the compare page), for the second try.
        next_url = _safe_next(request, "")
        return render(
            request,
            "training/version.html",
            _version_context(version, promote_form=form, next_url=next_url),
            status=400,
        )
    rollback = version.status == ModelVersion.Status.RETIRED
    try:
        version = model_version_promote(
            version=version,
            promoted_by=request.user,
            request=request,
            reason=form.cleaned_data["reason"],
            rerun_open=form.cleaned_data["rerun_open"],
            override_reason=form.cleaned_data["override_reason"],
        )
    except PromotionNeedsExternalValidation as exc:
        form.add_error("override_reason", str(exc))
        return render(
            request,
            "training/version.html",
            _version_context(version, promote_form=form, next_url=_safe_next(request, "")),
            status=400,
        )
    rerun = version.reanalysis
    messages.success(
        request,
        f"{'Rolled back to' if rollback else 'Promoted'} {version.name}: "
        "new studies are read by this version."
        + (
            f" {rerun.queued} images of {rerun.studies} open studies queued for re-analysis."
            if rerun is not None
            else ""
        ),
    )
    return redirect(_safe_next(request, default))


@require_GET
@model_admin_required
def version_checkpoint(request, pk: int):
    """The weights file (a checkpoint with its metadata), its sha256 in a header."""
    version = get_object_or_404(ModelVersion, pk=pk)
    audit(
        request, Action.DOWNLOAD, version, detail={"file": "checkpoint", "sha256": version.sha256}
    )
    response = private_file_response(
        version.weights, "application/octet-stream", download_name=checkpoint_name(version)
    )
    response["X-Checkpoint-SHA256"] = version.sha256
    return response


@require_GET
@model_admin_required
def evaluation_plot(request, pk: int, kind: str):
    evaluation = get_object_or_404(Evaluation, pk=pk)
    if kind not in EVALUATION_PLOTS or not getattr(evaluation, EVALUATION_PLOTS[kind][0]):
        raise Http404("No such plot.")
    return private_file_response(getattr(evaluation, EVALUATION_PLOTS[kind][0]), "image/png")
