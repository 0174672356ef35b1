"""The internal test beside the external evaluations, as the model, versions and compare pages
show them (the rule itself: training.services.validation)."""

from __future__ import annotations

from typing import Any

from training.models import ModelVersion
from training.services.validation import VersionValidation, version_validation
from training.views.common import in_class_order


def internal_label(validation: VersionValidation) -> str:
    internal = validation.internal
    if internal is None:
        return "No internal test (imported version)"
    grouped = {True: "yes", False: "no", None: "not known"}[internal.grouped]
    return f"Internal test (same dataset as training; patients grouped: {grouped})"


def _row(kind: str, label: str, metrics: dict, **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "label": label,
        "n": metrics.get("n"),
        "accuracy": metrics.get("accuracy"),
        "balanced_accuracy": metrics.get("balanced_accuracy"),
        "macro_auc": metrics.get("macro_auc"),
        "ece": metrics.get("ece"),
        "per_class": [
            {
                "name": name,
                "sensitivity": figures.get("sensitivity"),
                "specificity": figures.get("specificity"),
                "auc": figures.get("auc"),
            }
            for name, figures in in_class_order(metrics)
        ],
        **extra,
    }


def validation_rows(validation: VersionValidation) -> list[dict[str, Any]]:
    """The internal test first, then each done evaluation: external, or the training data again."""
    rows = []
    internal = validation.internal
    if internal is not None:
        rows.append(
            _row(
                "internal",
                internal_label(validation),
                internal.metrics,
                dataset=internal.dataset,
                split="test",
            )
        )
    # The external evaluations first, then the training data evaluated again.
    for checked in sorted(validation.evaluations, key=lambda c: not c.external):
        e = checked.evaluation
        rows.append(
            _row(
                "external" if checked.external else "same",
                "External" if checked.external else f"Not external: {checked.same_data}",
                e.metrics,
                dataset=e.dataset,
                split=e.split,
                evaluation=e,
            )
        )
    return rows


def headline(validation: VersionValidation) -> dict[str, Any]:
    """The figure a page leads with: the external evaluation with the most images when there is
    one, else the internal test, labelled with where it comes from."""
    best = validation.headline
    if best is not None:
        return {
            "external": True,
            "accuracy": best.metrics.get("accuracy"),
            "macro_auc": best.metrics.get("macro_auc"),
            "label": f"External: {best.dataset.name} / {best.split}",
            "dataset": best.dataset.name,
            "n": best.metrics.get("n"),
        }
    metrics = validation.internal.metrics if validation.internal is not None else {}
    return {
        "external": False,
        "accuracy": metrics.get("accuracy"),
        "macro_auc": metrics.get("macro_auc"),
        "label": internal_label(validation),
        "dataset": "",
        "n": metrics.get("n"),
    }


def validation_context(version: ModelVersion) -> dict[str, Any]:
    validation = version_validation(version=version)
    return {
        "validation": validation,
        "validation_rows": validation_rows(validation),
        "headline": headline(validation),
    }
