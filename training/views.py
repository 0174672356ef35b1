"""The training pages (administrators only): datasets, training runs, model versions, evaluations,
the candidate-versus-production comparison and promotion.

House style: validate with a form, call one service, render or redirect. No torch here: the
services that train or evaluate run on the `training` queue.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit
from cxrweb.permissions import model_admin_required
from cxrweb.responses import download_name, private_file_response
from training import selectors
from training.forms import (
    CompareForm,
    DatasetRegisterForm,
    EvaluationForm,
    PromoteForm,
    TrainingRunForm,
)
from training.models import Dataset, Evaluation, ModelVersion, TrainingRun
from training.services import (
    DatasetRejected,
    TrainingRejected,
    dataset_register,
    evaluation_create,
    model_version_promote,
    training_run_cancel,
    training_run_create,
)

logger = logging.getLogger(__name__)
Action = AuditEvent.Action

POLL_MS = 2000

# --------------------------------------------------------------------------------------------------
# Presentation helpers: metrics dicts (training.ml.train.metrics.classification_report) to table rows
# --------------------------------------------------------------------------------------------------

# (key, label, higher is better)
SUMMARY_METRICS = [
    ("accuracy", "Accuracy", True),
    ("balanced_accuracy", "Balanced accuracy", True),
    ("macro_f1", "Macro F1", True),
    ("macro_auc", "Macro AUC", True),
    ("ece_uncalibrated", "ECE before temperature", False),
    ("ece", "ECE", False),
    ("brier", "Brier score", False),
    ("log_loss", "Log loss", False),
]
PER_CLASS_COLUMNS = [
    ("support", "Support"),
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("precision", "Precision"),
    ("npv", "NPV"),
    ("f1", "F1"),
    ("auc", "AUC"),
]
COMPARE_CLASS_METRICS = [("sensitivity", "sensitivity"), ("specificity", "specificity"),
                         ("auc", "AUC")]
RUN_PLOTS = {
    "history": ("plot_history", "Loss and accuracy per epoch"),
    "confusion": ("plot_confusion", "Confusion matrix (test split)"),
    "roc": ("plot_roc", "ROC curves, one class against the rest (test split)"),
    "reliability": ("plot_reliability", "Reliability diagram (test split, calibrated)"),
}
EVALUATION_PLOTS = {k: v for k, v in RUN_PLOTS.items() if k != "history"}


def metric_summary(metrics: dict | None) -> list[dict[str, Any]]:
    """The headline figures present in a metrics dict, in a fixed order."""
    metrics = metrics or {}
    rows = []
    for key, label, _ in SUMMARY_METRICS:
        if metrics.get(key) is None:
            continue
        if key == "ece" and metrics.get("ece_uncalibrated") is not None:
            label = "ECE after temperature"
        rows.append({"key": key, "label": label, "value": metrics[key]})
    return rows


def per_class_rows(metrics: dict | None, thresholds: dict | None = None) -> list[dict[str, Any]]:
    metrics = metrics or {}
    rows = []
    for name, figures in _in_class_order(metrics):
        at = figures.get("at_threshold") or {}
        threshold = at.get("threshold", (thresholds or {}).get(name))
        rows.append({
            "name": name,
            "cells": [figures.get(key) for key, _ in PER_CLASS_COLUMNS],
            "threshold": threshold,
            "sens_at": at.get("sensitivity"),
            "spec_at": at.get("specificity"),
        })
    return rows


def _in_order(mapping: dict, classes: list[str]) -> list[tuple[str, Any]]:
    """A per-class mapping's items in the model's output order (a JSON column may reorder
    object keys); names that are not classes come last."""
    order = [c for c in classes if c in mapping]
    return [(c, mapping[c]) for c in order + [c for c in mapping if c not in order]]


def _in_class_order(metrics: dict) -> list[tuple[str, dict]]:
    return _in_order(metrics.get("per_class") or {}, metrics.get("classes") or [])


def _diff_row(label: str, candidate: Any, production: Any, higher_is_better: bool,
              group: str = "") -> dict[str, Any]:
    diff = verdict = None
    if isinstance(candidate, (int, float)) and isinstance(production, (int, float)):
        diff = candidate - production
        if abs(diff) >= 0.0005:
            verdict = "better" if (diff > 0) == higher_is_better else "worse"
        else:
            verdict = "same"
    return {"label": label, "group": group, "candidate": candidate, "production": production,
            "diff": diff, "verdict": verdict}


def compare_rows(candidate: dict, production: dict) -> list[dict[str, Any]]:
    """One row per figure, the candidate's and production's side by side with the difference."""
    rows = [_diff_row(label, candidate.get(key), production.get(key), higher)
            for key, label, higher in SUMMARY_METRICS
            if key in ("accuracy", "balanced_accuracy", "macro_auc", "ece", "brier")]
    # Class names are matched case-insensitively ("Normal" is "NORMAL"), as evaluations match a
    # dataset's folders to a model's classes: one row per class, named as the candidate names it.
    c_classes = {name.casefold(): (name, f) for name, f in _in_class_order(candidate)}
    p_classes = {name.casefold(): (name, f) for name, f in _in_class_order(production)}
    keys = list(c_classes) + [k for k in p_classes if k not in c_classes]
    for k in keys:
        name = (c_classes.get(k) or p_classes[k])[0]
        c_figures = (c_classes.get(k) or ("", {}))[1] or {}
        p_figures = (p_classes.get(k) or ("", {}))[1] or {}
        for key, label in COMPARE_CLASS_METRICS:
            rows.append(_diff_row(label, c_figures.get(key), p_figures.get(key), True,
                                  group=name))
    return rows


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def run_progress(run: TrainingRun) -> dict[str, Any]:
    p = run.progress or {}
    return {
        "phase": p.get("phase"),
        "epoch": p.get("epoch"),
        "epochs": p.get("epochs") or (run.config or {}).get("epochs"),
        "step": p.get("step"),
        "steps": p.get("steps"),
        "loss": p.get("loss"),
        "eta": duration(p.get("eta_s")) if p.get("eta_s") is not None else "",
        "images_per_s": p.get("images_per_s"),
        "percent": run.percent,
    }


def _plots(obj, kinds: dict[str, tuple[str, str]], url_name: str) -> list[dict[str, str]]:
    return [{"kind": kind, "title": title, "url": reverse(url_name, args=[obj.pk, kind])}
            for kind, (field, title) in kinds.items() if getattr(obj, field)]


def _fragment(request, template: str, context: dict) -> HttpResponse:
    response = render(request, template, context)
    response["Cache-Control"] = "no-store"
    return response


def _safe_next(request, default: str) -> str:
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return default


# --------------------------------------------------------------------------------------------------
# Overview
# --------------------------------------------------------------------------------------------------


@require_GET
@model_admin_required
def overview(request):
    production = selectors.production_version()
    runs = list(selectors.run_list()[:8])
    return render(request, "training/overview.html", {
        "production": production,
        "production_summary": metric_summary(production.metrics if production else None),
        "candidates": list(selectors.candidate_versions()[:10]),
        "runs": runs,
        "runs_pending": any(not r.is_finished for r in runs),
        "datasets": list(selectors.dataset_list()[:10]),
        "promotions": list(selectors.promotion_history(5)),
    })


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@model_admin_required
def dataset_list(request):
    form = DatasetRegisterForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            d = form.cleaned_data
            try:
                dataset = dataset_register(
                    name=d["name"], root=d["root"], created_by=request.user, seed=d["seed"],
                    val_fraction=d["val_fraction"], test_fraction=d["test_fraction"],
                    scan_now=False,
                )
            except DatasetRejected as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Registered {dataset.name}: a training worker is "
                                          "scanning its images.")
                return redirect("training:dataset", pk=dataset.pk)
    datasets = list(selectors.dataset_list())
    return render(request, "training/datasets.html", {
        "form": form, "datasets": datasets,
        "pending": any(d.status == Dataset.Status.SCANNING for d in datasets),
    }, status=400 if form.is_bound else 200)


def _dataset_context(dataset: Dataset) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "class_rows": selectors.dataset_class_table(dataset),
        "split_counts": dataset.split_counts(),
        "formats": (dataset.scan or {}).get("formats") or {},
        "skipped": (dataset.scan or {}).get("skipped") or [],
        "pending": dataset.status == Dataset.Status.SCANNING,
    }


def _dataset_or_404(pk: int) -> Dataset:
    try:
        return selectors.dataset_detail(pk)
    except Dataset.DoesNotExist as exc:
        raise Http404("No such dataset.") from exc


@require_GET
@model_admin_required
def dataset_detail(request, pk: int):
    dataset = _dataset_or_404(pk)
    runs = selectors.run_list().filter(dataset=dataset)[:20]
    evaluations = (Evaluation.objects.filter(dataset=dataset)
                   .select_related("model_version").defer("curves")[:20])
    return render(request, "training/dataset.html", {
        **_dataset_context(dataset), "runs": runs, "evaluations": evaluations,
        "poll_ms": POLL_MS,
    })


@require_GET
@model_admin_required
def dataset_status(request, pk: int):
    """The scan panel alone: the dataset page polls it while the scan runs."""
    return _fragment(request, "training/_dataset_body.html", _dataset_context(_dataset_or_404(pk)))


# --------------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------------


@require_GET
@model_admin_required
def run_list(request):
    runs = list(selectors.run_list()[:100])
    return render(request, "training/runs.html", {
        "runs": runs, "pending": any(not r.is_finished for r in runs),
    })


@require_http_methods(["GET", "POST"])
@model_admin_required
def run_start(request):
    if request.method == "POST":
        form = TrainingRunForm(request.POST)
        if form.is_valid():
            config = form.config()
            try:
                run = training_run_create(dataset=form.cleaned_data["dataset"], config=config,
                                          created_by=request.user)
            except TrainingRejected as exc:
                form.add_error(None, str(exc))
            else:
                audit(request, Action.TRAIN, run,
                      detail={"dataset": run.dataset.name, "config": run.config})
                messages.success(request, f"Training run {run.pk} queued for a training worker.")
                return redirect("training:run", pk=run.pk)
        return render(request, "training/run_start.html", {"form": form}, status=400)
    initial = {}
    if request.GET.get("dataset", "").isdigit():
        initial["dataset"] = int(request.GET["dataset"])
    form = TrainingRunForm(initial=initial)
    return render(request, "training/run_start.html", {
        "form": form, "no_dataset": not form.fields["dataset"].queryset.exists(),
    })


def _run_or_404(pk: int) -> TrainingRun:
    try:
        return selectors.run_detail(pk)
    except TrainingRun.DoesNotExist as exc:
        raise Http404("No such training run.") from exc


def _run_context(run: TrainingRun) -> dict[str, Any]:
    result = run.result or {}
    metrics = run.test_metrics
    best = result.get("best_epoch")
    return {
        "run": run,
        "version": selectors.run_version(run),
        "progress": run_progress(run),
        "pending": not run.is_finished,
        "history": [{**row, "is_best": row.get("epoch") == best} for row in run.history or []],
        "result": result,
        "summary": metric_summary(metrics),
        "per_class_columns": [label for _, label in PER_CLASS_COLUMNS],
        "per_class": per_class_rows(metrics, result.get("thresholds")),
        "thresholds": _in_order(result.get("thresholds") or {}, result.get("classes") or []),
        "parameters": f"{result['trainable_params']:,} of {result['total_params']:,}"
        if result.get("total_params") else "",
        "plots": _plots(run, RUN_PLOTS, "training:run-plot"),
        "config": sorted((run.config or {}).items()),
        "duration": duration((run.finished_at - run.started_at).total_seconds())
        if run.finished_at and run.started_at else "",
    }


@require_GET
@model_admin_required
def run_detail(request, pk: int):
    return render(request, "training/run.html", {**_run_context(_run_or_404(pk)),
                                                 "poll_ms": POLL_MS})


@require_GET
@model_admin_required
def run_status(request, pk: int):
    """The run panel alone: the run page polls it while the run is queued or running."""
    return _fragment(request, "training/_run_body.html", _run_context(_run_or_404(pk)))


@require_POST
@model_admin_required
def run_cancel(request, pk: int):
    run = get_object_or_404(TrainingRun, pk=pk)
    if run.is_finished:
        messages.info(request, f"Training run {run.pk} has already finished.")
    else:
        run = training_run_cancel(run=run)
        messages.success(request, f"Training run {run.pk} cancelled." if run.is_finished else
                         f"Training run {run.pk} stops after the current batch.")
    return redirect("training:run", pk=run.pk)


@require_GET
@model_admin_required
def run_plot(request, pk: int, kind: str):
    run = get_object_or_404(TrainingRun, pk=pk)
    if kind not in RUN_PLOTS or not getattr(run, RUN_PLOTS[kind][0]):
        raise Http404("No such plot.")
    return private_file_response(getattr(run, RUN_PLOTS[kind][0]), "image/png")


# --------------------------------------------------------------------------------------------------
# Model versions
# --------------------------------------------------------------------------------------------------


@require_GET
@model_admin_required
def version_list(request):
    return render(request, "training/versions.html", {
        "versions": selectors.version_list(),
        "promotions": selectors.promotion_history(10),
    })


def _version_or_404(pk: int) -> ModelVersion:
    try:
        return selectors.version_detail(pk)
    except ModelVersion.DoesNotExist as exc:
        raise Http404("No such model version.") from exc


def _evaluations_context(version: ModelVersion) -> dict[str, Any]:
    evaluations = []
    for evaluation in selectors.version_evaluations(version):
        evaluations.append({
            "evaluation": evaluation,
            "summary": {row["key"]: row["value"] for row in metric_summary(evaluation.metrics)},
            "plots": _plots(evaluation, EVALUATION_PLOTS, "training:evaluation-plot"),
        })
    return {
        "version": version, "evaluations": evaluations,
        "evaluations_pending": any(e["evaluation"].status in selectors.ACTIVE_EVALUATION
                                   for e in evaluations),
    }


def _version_context(version: ModelVersion, *, evaluation_form: EvaluationForm | None = None,
                     promote_form: PromoteForm | None = None, next_url: str = "") -> dict[str, Any]:
    return {
        **_evaluations_context(version),
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
        "poll_ms": POLL_MS,
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
    return _fragment(request, "training/_evaluations.html",
                     _evaluations_context(_version_or_404(pk)))


@require_POST
@model_admin_required
def version_evaluate(request, pk: int):
    version = _version_or_404(pk)
    form = EvaluationForm(request.POST)
    if form.is_valid():
        try:
            evaluation = evaluation_create(version=version, dataset=form.cleaned_data["dataset"],
                                           split=form.cleaned_data["split"],
                                           created_by=request.user,
                                           skip_unknown=form.cleaned_data["skip_unknown_classes"])
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Evaluation of {version.name} on {evaluation.dataset.name} "
                                      f"({evaluation.split}) queued for a training worker.")
            return redirect(reverse("training:version", args=[version.pk]) + "#evaluations")
    return render(request, "training/version.html",
                  _version_context(version, evaluation_form=form), status=400)


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
        return render(request, "training/version.html",
                      _version_context(version, promote_form=form, next_url=next_url), status=400)
    rollback = version.status == ModelVersion.Status.RETIRED
    version = model_version_promote(version=version, promoted_by=request.user, request=request,
                                    reason=form.cleaned_data["reason"],
                                    rerun_open=form.cleaned_data["rerun_open"])
    rerun = version.reanalysis
    messages.success(request, f"{'Rolled back to' if rollback else 'Promoted'} {version.name}: "
                              "new studies are read by this version."
                     + (f" {rerun.queued} images of {rerun.studies} open studies queued for "
                        "re-analysis." if rerun is not None else ""))
    return redirect(_safe_next(request, default))


@require_GET
@model_admin_required
def version_checkpoint(request, pk: int):
    """The weights file (a checkpoint with its metadata), its sha256 in a header."""
    version = get_object_or_404(ModelVersion, pk=pk)
    audit(request, Action.DOWNLOAD, version, detail={"file": "checkpoint",
                                                     "sha256": version.sha256})
    response = private_file_response(version.weights, "application/octet-stream",
                              download_name=checkpoint_name(version))
    response["X-Checkpoint-SHA256"] = version.sha256
    return response


@require_GET
@model_admin_required
def evaluation_plot(request, pk: int, kind: str):
    evaluation = get_object_or_404(Evaluation, pk=pk)
    if kind not in EVALUATION_PLOTS or not getattr(evaluation, EVALUATION_PLOTS[kind][0]):
        raise Http404("No such plot.")
    return private_file_response(getattr(evaluation, EVALUATION_PLOTS[kind][0]), "image/png")


# --------------------------------------------------------------------------------------------------
# Candidate against production
# --------------------------------------------------------------------------------------------------


def _compare_context(candidate: ModelVersion, dataset: Dataset) -> dict[str, Any]:
    production = selectors.production_version()
    same = production is not None and production.pk == candidate.pk
    sides = [("candidate", candidate)] + ([("production", production)]
                                          if production is not None and not same else [])
    evaluations = {role: selectors.latest_evaluation(version, dataset, "test")
                   for role, version in sides}
    done = {role: e for role, e in evaluations.items()
            if e is not None and e.status == Evaluation.Status.DONE}
    missing = [] if same else [role for role, e in evaluations.items()
                               if e is None or e.status == Evaluation.Status.FAILED]
    rows = []
    if "candidate" in done and "production" in done:
        rows = compare_rows(done["candidate"].metrics, done["production"].metrics)
    query = urlencode({"candidate": candidate.pk, "dataset": dataset.pk})
    return {
        "candidate": candidate, "production": production, "dataset": dataset,
        "same": same, "evaluations": evaluations, "missing": missing, "rows": rows,
        "candidate_summary": metric_summary(done["candidate"].metrics)
        if "candidate" in done else [],
        "pending": any(e is not None and e.status in selectors.ACTIVE_EVALUATION
                       for e in evaluations.values()),
        "query": query,
        "plots": {role: _plots(e, EVALUATION_PLOTS, "training:evaluation-plot")
                  for role, e in done.items()},
    }


@require_http_methods(["GET", "POST"])
@model_admin_required
def compare(request):
    """Candidate and production on the same stored test split of one dataset."""
    if request.method == "POST":
        form = CompareForm(request.POST)
        if form.is_valid():
            candidate, dataset = form.cleaned_data["candidate"], form.cleaned_data["dataset"]
            context = _compare_context(candidate, dataset)
            queued = []
            for role in context["missing"]:
                version = candidate if role == "candidate" else context["production"]
                try:
                    evaluation_create(version=version, dataset=dataset, split="test",
                                      created_by=request.user)
                except ValueError as exc:
                    messages.error(request, str(exc))
                else:
                    queued.append(version.name)
            if queued:
                messages.success(request, f"Evaluating {' and '.join(queued)} on the test split "
                                          f"of {dataset.name}.")
            return redirect(f"{reverse('training:compare')}?{context['query']}")
        return render(request, "training/compare.html", {"form": form}, status=400)
    if "candidate" in request.GET and "dataset" in request.GET:
        form = CompareForm(request.GET)
    else:  # a link from a version page names the candidate only: choose the dataset
        form = CompareForm(initial={k: v for k, v in request.GET.items()
                                    if k in ("candidate", "dataset") and v.isdigit()})
    context: dict[str, Any] = {"form": form, "poll_ms": POLL_MS}
    if form.is_bound and form.is_valid():
        context.update(_compare_context(form.cleaned_data["candidate"],
                                        form.cleaned_data["dataset"]))
        context["promote_form"] = PromoteForm()
    return render(request, "training/compare.html", context,
                  status=400 if form.is_bound and not form.is_valid() else 200)


@require_GET
@model_admin_required
def compare_results(request):
    """The comparison panel alone: the compare page polls it while evaluations run."""
    form = CompareForm(request.GET)
    if not form.is_valid():
        raise Http404("Choose a candidate version and a ready dataset.")
    return _fragment(request, "training/_compare_results.html",
                     _compare_context(form.cleaned_data["candidate"],
                                      form.cleaned_data["dataset"]))
