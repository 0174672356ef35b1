"""The training overview: production, candidates, recent runs, datasets and promotions."""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_GET

from cxrweb.permissions import model_admin_required
from training import selectors
from training.services.validation import versions_validation
from training.views.common import metric_summary
from training.views.validation import headline


@require_GET
@model_admin_required
def overview(request):
    production = selectors.production_version()
    candidates = list(selectors.candidate_versions()[:10])
    validations = versions_validation(versions=candidates + ([production] if production else []))
    runs = list(selectors.run_list()[:8])
    return render(
        request,
        "training/overview.html",
        {
            "production": production,
            "production_summary": metric_summary(production.metrics if production else None),
            "production_headline": headline(validations[production.pk]) if production else None,
            "candidates": [
                {"version": v, "headline": headline(validations[v.pk])} for v in candidates
            ],
            "runs": runs,
            "runs_pending": any(not r.is_finished for r in runs),
            "datasets": list(selectors.dataset_list()[:10]),
            "promotions": list(selectors.promotion_history(5)),
        },
    )
