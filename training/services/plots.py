"""Store the plots of a run or an evaluation as PNG files (drawn by training.ml.train.plots)."""

from __future__ import annotations

import logging

from django.core.files.base import ContentFile

logger = logging.getLogger(__name__)


def save_result_plots(
    obj,
    *,
    metrics: dict | None,
    curves: dict | None,
    prefix: str,
    history: list | None = None,
    best_epoch: int | None = None,
) -> list[str]:
    """Draw what the figures allow and attach the PNGs to obj's plot_* fields (not saved)."""
    from training.ml.train import plots

    fields = []

    def attach(field: str, png: bytes) -> None:
        getattr(obj, field).save(
            f"{prefix}-{field.removeprefix('plot_')}.png", ContentFile(png), save=False
        )
        fields.append(field)

    try:
        if history is not None and hasattr(obj, "plot_history") and history:
            attach("plot_history", plots.plot_history(history, best_epoch=best_epoch))
        if metrics and metrics.get("confusion_matrix"):
            attach(
                "plot_confusion",
                plots.plot_confusion_matrix(metrics["confusion_matrix"], metrics["classes"]),
            )
        if curves and curves.get("roc"):
            aucs = {c: f.get("auc") for c, f in (metrics or {}).get("per_class", {}).items()}
            attach("plot_roc", plots.plot_roc(curves["roc"], aucs))
        if curves and curves.get("reliability"):
            attach(
                "plot_reliability",
                plots.plot_reliability(curves["reliability"], (metrics or {}).get("ece")),
            )
    except Exception:  # noqa: BLE001 - a plot must never lose the run's figures
        logger.exception("could not draw the plots of %s", prefix)
    return fields
