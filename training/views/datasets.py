"""The dataset pages: register a folder of images, its scan and its class table."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from cxrweb.permissions import model_admin_required
from training import selectors
from training.forms import DatasetRegisterForm
from training.models import Dataset, Evaluation
from training.services import DatasetRejected, dataset_register
from training.views.common import POLL_MS, fragment


@require_http_methods(["GET", "POST"])
@model_admin_required
def dataset_list(request):
    form = DatasetRegisterForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        if form.is_valid():
            d = form.cleaned_data
            try:
                dataset = dataset_register(
                    name=d["name"],
                    root=d["root"],
                    created_by=request.user,
                    seed=d["seed"],
                    val_fraction=d["val_fraction"],
                    test_fraction=d["test_fraction"],
                    scan_now=False,
                    group_patterns=d["group_patterns"],
                    groups_csv=d["groups_csv"],
                )
            except DatasetRejected as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(
                    request, f"Registered {dataset.name}: a training worker is scanning its images."
                )
                return redirect("training:dataset", pk=dataset.pk)
    datasets = list(selectors.dataset_list())
    return render(
        request,
        "training/datasets.html",
        {
            "form": form,
            "datasets": datasets,
            "pending": any(d.status == Dataset.Status.SCANNING for d in datasets),
        },
        status=400 if form.is_bound else 200,
    )


def _dataset_context(dataset: Dataset) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "class_rows": selectors.dataset_class_table(dataset),
        "split_counts": dataset.split_counts(),
        "patient_rows": dataset.split_patient_rows,
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
    evaluations = (
        Evaluation.objects.filter(dataset=dataset)
        .select_related("model_version")
        .defer("curves")[:20]
    )
    return render(
        request,
        "training/dataset.html",
        {
            **_dataset_context(dataset),
            "runs": runs,
            "evaluations": evaluations,
            "poll_ms": POLL_MS,
        },
    )


@require_GET
@model_admin_required
def dataset_status(request, pk: int):
    """The scan panel alone: the dataset page polls it while the scan runs."""
    return fragment(request, "training/_dataset_body.html", _dataset_context(_dataset_or_404(pk)))
