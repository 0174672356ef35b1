"""What the training pages share: the polling interval, the metrics dicts
(training.ml.train.metrics.classification_report) as table rows, plot links and polled fragments."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse

POLL_MS = 2000

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
    for name, figures in in_class_order(metrics):
        at = figures.get("at_threshold") or {}
        threshold = at.get("threshold", (thresholds or {}).get(name))
        rows.append(
            {
                "name": name,
                "cells": [figures.get(key) for key, _ in PER_CLASS_COLUMNS],
                "threshold": threshold,
                "sens_at": at.get("sensitivity"),
                "spec_at": at.get("specificity"),
            }
        )
    return rows


def in_order(mapping: dict, classes: list[str]) -> list[tuple[str, Any]]:
    """A per-class mapping's items in the model's output order (a JSON column may reorder
    object keys); names that are not classes come last."""
    order = [c for c in classes if c in mapping]
    return [(c, mapping[c]) for c in order + [c for c in mapping if c not in order]]


def in_class_order(metrics: dict) -> list[tuple[str, dict]]:
    return in_order(metrics.get("per_class") or {}, metrics.get("classes") or [])


def plot_links(obj, kinds: dict[str, tuple[str, str]], url_name: str) -> list[dict[str, str]]:
    return [
        {"kind": kind, "title": title, "url": reverse(url_name, args=[obj.pk, kind])}
        for kind, (field, title) in kinds.items()
        if getattr(obj, field)
    ]


def fragment(request, template: str, context: dict) -> HttpResponse:
    response = render(request, template, context)
    response["Cache-Control"] = "no-store"
    return response
