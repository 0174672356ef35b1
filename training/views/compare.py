"""Candidate against production: both versions on the same stored test split of one dataset."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from cxrweb.permissions import model_admin_required
from training import selectors
from training.forms import CompareForm, PromoteForm
from training.models import Dataset, Evaluation, ModelVersion
from training.services import evaluation_create
from training.services.validation import dataset_same_data
from training.views.common import (
    EVALUATION_PLOTS,
    POLL_MS,
    SUMMARY_METRICS,
    fragment,
    in_class_order,
    metric_summary,
    plot_links,
)
from training.views.validation import validation_context

COMPARE_CLASS_METRICS = [
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("auc", "AUC"),
]


def _diff_row(
    label: str, candidate: Any, production: Any, higher_is_better: bool, group: str = ""
) -> dict[str, Any]:
    diff = verdict = None
    if isinstance(candidate, (int, float)) and isinstance(production, (int, float)):
        diff = candidate - production
        if abs(diff) >= 0.0005:
            verdict = "better" if (diff > 0) == higher_is_better else "worse"
        else:
            verdict = "same"
    return {
        "label": label,
        "group": group,
        "candidate": candidate,
        "production": production,
        "diff": diff,
        "verdict": verdict,
    }


def compare_rows(candidate: dict, production: dict) -> list[dict[str, Any]]:
    """One row per figure, the candidate's and production's side by side with the difference."""
    rows = [
        _diff_row(label, candidate.get(key), production.get(key), higher)
        for key, label, higher in SUMMARY_METRICS
        if key in ("accuracy", "balanced_accuracy", "macro_auc", "ece", "brier")
    ]
    # Class names are matched case-insensitively ("Normal" is "NORMAL"), as evaluations match a
    # dataset's folders to a model's classes: one row per class, named as the candidate names it.
    c_classes = {name.casefold(): (name, f) for name, f in in_class_order(candidate)}
    p_classes = {name.casefold(): (name, f) for name, f in in_class_order(production)}
    keys = list(c_classes) + [k for k in p_classes if k not in c_classes]
    for k in keys:
        name = (c_classes.get(k) or p_classes[k])[0]
        c_figures = (c_classes.get(k) or ("", {}))[1] or {}
        p_figures = (p_classes.get(k) or ("", {}))[1] or {}
        for key, label in COMPARE_CLASS_METRICS:
            rows.append(_diff_row(label, c_figures.get(key), p_figures.get(key), True, group=name))
    return rows


def _compare_context(candidate: ModelVersion, dataset: Dataset) -> dict[str, Any]:
    production = selectors.production_version()
    same = production is not None and production.pk == candidate.pk
    sides = [("candidate", candidate)] + (
        [("production", production)] if production is not None and not same else []
    )
    evaluations = {
        role: selectors.latest_evaluation(version, dataset, "test") for role, version in sides
    }
    done = {
        role: e
        for role, e in evaluations.items()
        if e is not None and e.status == Evaluation.Status.DONE
    }
    missing = (
        []
        if same
        else [
            role
            for role, e in evaluations.items()
            if e is None or e.status == Evaluation.Status.FAILED
        ]
    )
    rows = []
    if "candidate" in done and "production" in done:
        rows = compare_rows(done["candidate"].metrics, done["production"].metrics)
    query = urlencode({"candidate": candidate.pk, "dataset": dataset.pk})
    return {
        # Whether this dataset is each side's training data (its figures are then internal).
        "same_data": {
            role: dataset_same_data(version=version, dataset=dataset) for role, version in sides
        },
        "candidate": candidate,
        "production": production,
        "dataset": dataset,
        "same": same,
        "evaluations": evaluations,
        "missing": missing,
        "rows": rows,
        "candidate_summary": metric_summary(done["candidate"].metrics)
        if "candidate" in done
        else [],
        "pending": any(
            e is not None and e.status in selectors.ACTIVE_EVALUATION for e in evaluations.values()
        ),
        "query": query,
        "plots": {
            role: plot_links(e, EVALUATION_PLOTS, "training:evaluation-plot")
            for role, e in done.items()
        },
    }


def _validation_sides(context: dict[str, Any]) -> dict[str, Any]:
    """The candidate's (and production's) internal test and external evaluations; the
    candidate's validation also decides whether the promote form asks for an override."""
    sides = [("candidate", context["candidate"])]
    if context["production"] is not None and not context["same"]:
        sides.append(("production", context["production"]))
    compare_sides = []
    for role, version in sides:
        v = validation_context(version)
        compare_sides.append(
            {
                "role": role,
                "version": version,
                "validation": v["validation"],
                "rows": v["validation_rows"],
                "headline": v["headline"],
            }
        )
    return {"compare_sides": compare_sides, "validation": compare_sides[0]["validation"]}


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
                    evaluation_create(
                        version=version, dataset=dataset, split="test", created_by=request.user
                    )
                except ValueError as exc:
                    messages.error(request, str(exc))
                else:
                    queued.append(version.name)
            if queued:
                messages.success(
                    request,
                    f"Evaluating {' and '.join(queued)} on the test split of {dataset.name}.",
                )
            return redirect(f"{reverse('training:compare')}?{context['query']}")
        return render(request, "training/compare.html", {"form": form}, status=400)
    if "candidate" in request.GET and "dataset" in request.GET:
        form = CompareForm(request.GET)
    else:  # a link from a version page names the candidate only: choose the dataset
        form = CompareForm(
            initial={
                k: v
                for k, v in request.GET.items()
                if k in ("candidate", "dataset") and v.isdigit()
            }
        )
    context: dict[str, Any] = {"form": form, "poll_ms": POLL_MS}
    if form.is_bound and form.is_valid():
        context.update(
            _compare_context(form.cleaned_data["candidate"], form.cleaned_data["dataset"])
        )
        context["promote_form"] = PromoteForm()
        context.update(_validation_sides(context))
    return render(
        request,
        "training/compare.html",
        context,
        status=400 if form.is_bound and not form.is_valid() else 200,
    )


@require_GET
@model_admin_required
def compare_results(request):
    """The comparison panel alone: the compare page polls it while evaluations run."""
    form = CompareForm(request.GET)
    if not form.is_valid():
        raise Http404("Choose a candidate version and a ready dataset.")
    return fragment(
        request,
        "training/_compare_results.html",
        _compare_context(form.cleaned_data["candidate"], form.cleaned_data["dataset"]),
    )
