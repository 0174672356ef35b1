"""The training overview: production, candidates, recent runs, datasets and promotions."""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_GET

from cxrweb.permissions import model_admin_required
from training import selectors
from training.views.common import metric_summary


@require_GET
@model_admin_required
def overview(request):
    production = selectors.production_version()
    runs = list(selectors.run_list()[:8])
    return render(
        request,
        "training/overview.html",
        {
            "production": production,
            "production_summary": metric_summary(production.metrics if production else None),
            "candidates": list(selectors.candidate_versions()[:10]),
            "runs": runs,
            "runs_pending": any(not r.is_finished for r in runs),
            "datasets": list(selectors.dataset_list()[:10]),
            "promotions": list(selectors.promotion_history(5)),
        },
    )
