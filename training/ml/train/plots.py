"""PNG charts for training runs and evaluations: history, confusion matrix, ROC, reliability.

Each function draws on its own :class:`matplotlib.figure.Figure` with the Agg canvas and returns
PNG bytes: no pyplot, so no global figure registry, no GUI backend, nothing that leaks in a
long-lived worker or depends on ``matplotlib.use``. Charts are 5 x 4 in at 100 dpi and stay
readable in grayscale (lines differ by style and marker, not by colour alone).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_confusion_matrix", "plot_history", "plot_reliability", "plot_roc"]

FIGSIZE = (5.0, 4.0)
DPI = 100
# Style cycle that survives grayscale printing: every series differs in dash pattern and marker.
_STYLES: list[dict[str, Any]] = [
    {"linestyle": "-", "marker": "o", "color": "#1f4e79"},
    {"linestyle": "--", "marker": "s", "color": "#c55a11"},
    {"linestyle": ":", "marker": "^", "color": "#2e7d32"},
    {"linestyle": "-.", "marker": "D", "color": "#6a1b9a"},
    {"linestyle": (0, (5, 1, 1, 1, 1, 1)), "marker": "v", "color": "#333333"},
    {"linestyle": (0, (1, 1)), "marker": "P", "color": "#8d6e63"},
]


def _figure() -> Figure:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _style(i: int) -> dict[str, Any]:
    return dict(_STYLES[i % len(_STYLES)])


def _values(history: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    out = []
    for row in history:
        value = row.get(key)
        out.append(float(value) if value is not None else math.nan)
    return out


def plot_history(history: Sequence[Mapping[str, Any]], *, best_epoch: int | None = None) -> bytes:
    """Loss (left) and accuracy (right) per epoch, train vs validation.

    ``history`` rows are :func:`training.ml.train.fit.fit`'s: ``epoch``, ``train_loss``, ``val_loss``,
    ``train_acc``, ``val_acc``. ``best_epoch`` draws a vertical marker.
    """
    fig = _figure()
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [int(row.get("epoch", i + 1)) for i, row in enumerate(history)]
    for ax, metric, title in ((loss_ax, "loss", "Loss"), (acc_ax, "acc", "Accuracy")):
        for i, (split, name) in enumerate((("train", "train"), ("val", "validation"))):
            ax.plot(epochs, _values(history, f"{split}_{metric}"), label=name, **_style(i))
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.5", linestyle=":", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        if epochs:
            ax.set_xticks(_ticks(epochs))
    acc_ax.set_ylim(-0.02, 1.02)
    loss_ax.legend(fontsize=8)
    if not history:
        loss_ax.text(0.5, 0.5, "no epochs", ha="center", va="center", transform=loss_ax.transAxes)
    return _png(fig)


def _ticks(epochs: list[int]) -> list[int]:
    step = max(1, math.ceil(len(epochs) / 8))
    return epochs[::step]


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], *, normalize: bool = False
) -> bytes:
    """Rows true, columns predicted; each cell shows its count (and its row share if normalised)."""
    counts = np.asarray(matrix, dtype=np.float64)
    k = len(classes)
    if counts.shape != (k, k):
        raise ValueError(f"matrix must be {k} x {k} for {k} classes, got {counts.shape}.")
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    shown = shares if normalize else counts
    fig = _figure()
    ax = fig.subplots()
    vmax = 1.0 if normalize else max(1.0, float(counts.max()))
    image = ax.imshow(shown, cmap="Greys", vmin=0.0, vmax=vmax)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fontsize = 10 if k <= 4 else 8 if k <= 8 else 6
    for i in range(k):
        for j in range(k):
            text = f"{int(counts[i, j])}"
            if normalize:
                text = f"{shares[i, j]:.0%}\n({text})"
            dark = shown[i, j] > 0.5 * vmax
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if dark else "black",
                fontweight="bold" if i == j else "normal",
            )
    ax.set_xticks(range(k), labels=list(classes), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels=list(classes), fontsize=8)
    ax.set_xlabel("predicted", fontsize=9)
    ax.set_ylabel("true", fontsize=9)
    ax.set_title("Confusion matrix" + (" (row %)" if normalize else ""), fontsize=10)
    return _png(fig)


def plot_roc(
    roc_curves: Mapping[str, Mapping[str, Sequence[float]] | None],
    aucs: Mapping[str, float | None],
) -> bytes:
    """One-vs-rest ROC curves (from :func:`training.ml.train.metrics.roc_curves`) with AUCs in the legend.

    Classes whose curve is ``None`` (no positives or negatives) are left out, and say so.
    """
    fig = _figure()
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="chance")
    drawn = 0
    for i, (name, curve) in enumerate(roc_curves.items()):
        auc = aucs.get(name)
        if curve is None:
            continue
        style = _style(i)
        label = f"{name} (AUC {auc:.3f})" if auc is not None else name
        n = len(curve["fpr"])
        ax.plot(
            curve["fpr"],
            curve["tpr"],
            label=label,
            markersize=4,
            markevery=max(1, n // 8),
            linewidth=1.5,
            **style,
        )
        drawn += 1
    if drawn == 0:
        ax.text(0.5, 0.5, "no ROC curve defined", ha="center", va="center")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false positive rate)", fontsize=9)
    ax.set_ylabel("sensitivity (true positive rate)", fontsize=9)
    ax.set_title("ROC, one vs rest", fontsize=10)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def plot_reliability(bins: Sequence[Mapping[str, Any]], ece: float | None) -> bytes:
    """Reliability diagram: accuracy per confidence bin (bars) against the diagonal.

    ``bins`` are :func:`training.ml.train.calibration.reliability_bins`' dicts; empty bins are blank.
    """
    fig = _figure()
    ax = fig.subplots()
    ax.plot(
        [0, 1],
        [0, 1],
        color="0.1",
        linestyle="--",
        linewidth=1.2,
        label="perfect calibration",
        zorder=3,  # over the bars: the gap between bar and diagonal is the point of the chart
    )
    used = [b for b in bins if b.get("count")]
    if used:
        lefts = [float(b["bin_lower"]) for b in used]
        widths = [float(b["bin_upper"]) - float(b["bin_lower"]) for b in used]
        ax.bar(
            lefts,
            [float(b["accuracy"]) for b in used],
            width=widths,
            align="edge",
            color="0.75",
            edgecolor="black",
            hatch="//",
            linewidth=0.8,
            label="accuracy",
        )
        ax.plot(
            [float(b["confidence"]) for b in used],
            [float(b["accuracy"]) for b in used],
            linestyle="none",
            marker="o",
            color="black",
            markersize=4,
            label="bin mean confidence",
        )
    else:
        ax.text(0.5, 0.5, "no predictions", ha="center", va="center")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("confidence (top-class probability)", fontsize=9)
    ax.set_ylabel("accuracy", fontsize=9)
    title = "Reliability"
    if ece is not None and math.isfinite(ece):
        title += f" (ECE {ece:.3f})"
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)
