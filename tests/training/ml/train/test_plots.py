from __future__ import annotations

import os
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.ml.train.calibration import reliability_bins, softmax
from training.ml.train.metrics import classification_report, roc_curves
from training.ml.train.plots import plot_confusion_matrix, plot_history, plot_reliability, plot_roc

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["normal", "pneumonia", "covid"]
REPO_ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def predictions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    probs = softmax(rng.normal(size=(300, 3)) + 2.0 * np.eye(3)[labels])
    return labels, probs


def _check_png(data: bytes) -> Image.Image:
    assert data.startswith(PNG_SIGNATURE)
    assert 5_000 < len(data) < 400_000
    image = Image.open(BytesIO(data))
    assert image.size == (500, 400)  # 5 x 4 in at 100 dpi
    # Something was drawn: not a blank canvas.
    assert np.asarray(image.convert("L")).std() > 10
    return image


def test_plot_history_draws_loss_and_accuracy() -> None:
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "train_acc": 1 - 0.5 / e,
            "val_acc": 1 - 0.6 / e,
        }
        for e in range(1, 6)
    ]

    _check_png(plot_history(history, best_epoch=4))
    assert plot_history([]).startswith(PNG_SIGNATURE)  # a run cancelled before its first epoch
    assert plot_history([{"epoch": 1, "train_loss": 0.5, "val_loss": None}]).startswith(
        PNG_SIGNATURE
    )


@pytest.mark.parametrize("normalize", [False, True])
def test_plot_confusion_matrix(predictions: tuple[np.ndarray, np.ndarray], normalize: bool) -> None:
    labels, probs = predictions
    matrix = classification_report(labels, probs, CLASSES)["confusion_matrix"]

    _check_png(plot_confusion_matrix(matrix, CLASSES, normalize=normalize))


def test_plot_confusion_matrix_refuses_a_matrix_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="3 x 3"):
        plot_confusion_matrix([[1, 2], [3, 4]], CLASSES)


def test_plot_roc_with_aucs_and_an_undefined_class(
    predictions: tuple[np.ndarray, np.ndarray],
) -> None:
    labels, probs = predictions
    curves = roc_curves(labels, probs, CLASSES)
    aucs = {
        c: f["auc"] for c, f in classification_report(labels, probs, CLASSES)["per_class"].items()
    }

    _check_png(plot_roc(curves, aucs))
    _check_png(plot_roc({**curves, "covid": None}, {**aucs, "covid": None}))


def test_plot_reliability(predictions: tuple[np.ndarray, np.ndarray]) -> None:
    labels, probs = predictions

    _check_png(plot_reliability(reliability_bins(probs, labels), 0.042))
    assert plot_reliability(reliability_bins(np.zeros((0, 3)), []), None).startswith(PNG_SIGNATURE)


def test_plotting_never_touches_pyplot() -> None:
    # In a fresh interpreter: pyplot would register figures globally and pick a GUI backend.
    code = (
        "import sys\n"
        "from training.ml.train import plots\n"
        "plots.plot_history([{'epoch': 1, 'train_loss': 1.0, 'val_loss': 1.0}])\n"
        "plots.plot_confusion_matrix([[1, 0], [0, 1]], ['a', 'b'])\n"
        "plots.plot_roc({'a': {'fpr': [0, 1], 'tpr': [0, 1]}}, {'a': 0.5})\n"
        "plots.plot_reliability([], None)\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("MPLBACKEND", None)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
