"""The training run pages: the list, starting a run, its live progress, cancelling, its plots."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit
from cxrweb.permissions import model_admin_required
from cxrweb.responses import private_file_response
from training import selectors
from training.forms import TrainingRunForm
from training.models import TrainingRun
from training.services import TrainingRejected, training_run_cancel, training_run_create
from training.views.common import (
    PER_CLASS_COLUMNS,
    POLL_MS,
    RUN_PLOTS,
    fragment,
    in_order,
    metric_summary,
    per_class_rows,
    plot_links,
)

Action = AuditEvent.Action


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


@require_GET
@model_admin_required
def run_list(request):
    runs = list(selectors.run_list()[:100])
    return render(
        request,
        "training/runs.html",
        {
            "runs": runs,
            "pending": any(not r.is_finished for r in runs),
        },
    )


@require_http_methods(["GET", "POST"])
@model_admin_required
def run_start(request):
    if request.method == "POST":
        form = TrainingRunForm(request.POST)
        if form.is_valid():
            config = form.config()
            try:
                run = training_run_create(
                    dataset=form.cleaned_data["dataset"], config=config, created_by=request.user
                )
            except TrainingRejected as exc:
                form.add_error(None, str(exc))
            else:
                audit(
                    request,
                    Action.TRAIN,
                    run,
                    detail={"dataset": run.dataset.name, "config": run.config},
                )
                messages.success(request, f"Training run {run.pk} queued for a training worker.")
                return redirect("training:run", pk=run.pk)
        return render(request, "training/run_start.html", {"form": form}, status=400)
    initial = {}
    if request.GET.get("dataset", "").isdigit():
        initial["dataset"] = int(request.GET["dataset"])
    form = TrainingRunForm(initial=initial)
    return render(
        request,
        "training/run_start.html",
        {
            "form": form,
            "no_dataset": not form.fields["dataset"].queryset.exists(),
        },
    )


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
        "thresholds": in_order(result.get("thresholds") or {}, result.get("classes") or []),
        "parameters": f"{result['trainable_params']:,} of {result['total_params']:,}"
        if result.get("total_params")
        else "",
        "plots": plot_links(run, RUN_PLOTS, "training:run-plot"),
        "config": sorted((run.config or {}).items()),
        "duration": duration((run.finished_at - run.started_at).total_seconds())
        if run.finished_at and run.started_at
        else "",
    }


@require_GET
@model_admin_required
def run_detail(request, pk: int):
    return render(
        request, "training/run.html", {**_run_context(_run_or_404(pk)), "poll_ms": POLL_MS}
    )


@require_GET
@model_admin_required
def run_status(request, pk: int):
    """The run panel alone: the run page polls it while the run is queued or running."""
    return fragment(request, "training/_run_body.html", _run_context(_run_or_404(pk)))


@require_POST
@model_admin_required
def run_cancel(request, pk: int):
    run = get_object_or_404(TrainingRun, pk=pk)
    if run.is_finished:
        messages.info(request, f"Training run {run.pk} has already finished.")
    else:
        run = training_run_cancel(run=run)
        messages.success(
            request,
            f"Training run {run.pk} cancelled."
            if run.is_finished
            else f"Training run {run.pk} stops after the current batch.",
        )
    return redirect("training:run", pk=run.pk)


@require_GET
@model_admin_required
def run_plot(request, pk: int, kind: str):
    run = get_object_or_404(TrainingRun, pk=pk)
    if kind not in RUN_PLOTS or not getattr(run, RUN_PLOTS[kind][0]):
        raise Http404("No such plot.")
    return private_file_response(getattr(run, RUN_PLOTS[kind][0]), "image/png")
