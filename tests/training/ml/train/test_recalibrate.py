"""training.ml.train.recalibrate: fitting a site calibration on logits, with the figures before
and after, and the split of images between the OOD reference's fit and its threshold."""

from __future__ import annotations

import numpy as np
import pytest

from training.ml.train.recalibrate import calibration_fit, calibration_metrics, ood_split

CLASSES = ["NORMAL", "PNEUMONIA"]


def _overconfident(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a model that is right ~75 % of the time but says ~99 %."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    correct = rng.random(n) < 0.75
    predicted = np.where(correct, labels, 1 - labels)
    logits = np.zeros((n, 2))
    logits[np.arange(n), predicted] = 5.0 + rng.normal(0, 0.5, n)
    return logits, labels


def test_it_lowers_the_calibration_error_of_an_overconfident_model():
    logits, labels = _overconfident()

    fit = calibration_fit(
        logits,
        labels,
        CLASSES,
        temperature_before=1.0,
        thresholds_before={"NORMAL": 0.5, "PNEUMONIA": 0.5},
        target_sensitivity=0.9,
    )

    assert fit.temperature > 2.0  # softened
    assert fit.after["ece"] < fit.before["ece"] / 3
    assert fit.after["nll"] < fit.before["nll"]
    assert fit.before["temperature"] == 1.0 and fit.after["temperature"] == fit.temperature
    for name in CLASSES:
        assert fit.after["per_class"][name]["sensitivity"] >= 0.9
        assert 0.0 <= fit.after["per_class"][name]["specificity"] <= 1.0


def test_metrics_say_none_where_a_class_has_no_example():
    logits = np.array([[2.0, 0.0], [1.0, 0.5]])
    figures = calibration_metrics(
        logits, np.array([0, 0]), CLASSES, temperature=1.0, thresholds={"PNEUMONIA": 0.3}
    )
    assert figures["per_class"]["PNEUMONIA"]["sensitivity"] is None
    assert figures["per_class"]["NORMAL"]["specificity"] is None
    assert figures["per_class"]["PNEUMONIA"]["specificity"] == pytest.approx(0.5)


def test_the_ood_split_holds_out_a_share_of_every_class_and_is_seeded():
    labels = np.array([0] * 10 + [1] * 4 + [2])
    fit_rows, held = ood_split(labels, fraction=0.3)

    assert sorted([*fit_rows, *held]) == list(range(15))
    assert [int((labels[held] == c).sum()) for c in (0, 1, 2)] == [3, 1, 0]
    again = ood_split(labels, fraction=0.3)
    assert np.array_equal(again[1], held)
