from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.ml.train.calibration import (
    FALLBACK_THRESHOLD,
    choose_thresholds,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_bins,
    softmax,
)

CLASSES = ["normal", "pneumonia", "covid"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _calibrated_sample(n: int, seed: int = 0, scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """True logits and labels drawn from softmax(true logits): perfectly calibrated by design."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, scale, (n, 3))
    probs = softmax(logits)
    labels = (rng.random(n)[:, None] > probs.cumsum(axis=1)).sum(axis=1)
    return logits, labels


@pytest.mark.parametrize("true_temperature", [2.0, 0.5])
def test_fit_temperature_recovers_the_temperature_that_distorted_the_logits(
    true_temperature: float,
) -> None:
    logits, labels = _calibrated_sample(20_000)

    temperature = fit_temperature(logits * true_temperature, labels)

    assert temperature == pytest.approx(true_temperature, rel=0.1)
    assert nll(logits * true_temperature, labels, temperature) < nll(
        logits * true_temperature, labels
    )


def test_fit_temperature_leaves_calibrated_logits_alone() -> None:
    logits, labels = _calibrated_sample(20_000, seed=1)

    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.05)


def test_fit_temperature_returns_one_when_the_data_cannot_tell() -> None:
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0
    # All correct: the NLL falls forever as T -> 0; sharpening would be overconfidence.
    separable = np.array([[3.0, -1.0], [-2.0, 1.0], [0.5, 0.1]])
    assert fit_temperature(separable, [0, 1, 0]) == 1.0
    # Uniform logits: no temperature changes anything.
    assert fit_temperature(np.zeros((10, 3)), np.arange(10) % 3) == 1.0


def test_ece_of_calibrated_predictions_is_near_zero_and_of_overconfident_ones_is_not() -> None:
    logits, labels = _calibrated_sample(20_000, seed=2)

    calibrated = expected_calibration_error(softmax(logits), labels)
    overconfident = expected_calibration_error(softmax(logits * 3), labels)

    assert calibrated < 0.02
    assert overconfident > 0.1


def test_ece_by_hand() -> None:
    # All ten at confidence 0.9 in one bin; 5 correct: |0.5 - 0.9| = 0.4.
    probs = np.tile([0.9, 0.1], (10, 1))
    labels = [0] * 5 + [1] * 5

    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    assert expected_calibration_error(probs, [0] * 9 + [1]) == pytest.approx(0.0)


def test_reliability_bins_cover_every_bin_and_every_image() -> None:
    probs = np.array([[0.95, 0.05], [0.55, 0.45], [0.6, 0.4], [0.2, 0.8]])
    labels = [0, 1, 0, 1]

    bins = reliability_bins(probs, labels, n_bins=10)

    assert len(bins) == 10
    assert sum(b["count"] for b in bins) == 4
    assert bins[0]["bin_lower"] == 0.0 and bins[-1]["bin_upper"] == 1.0
    by_upper = {round(b["bin_upper"], 2): b for b in bins}
    assert by_upper[0.6]["count"] == 2  # 0.55 and 0.6: bins are (lo, hi]
    assert by_upper[0.6]["accuracy"] == 0.5
    assert by_upper[0.6]["confidence"] == pytest.approx(0.575)
    assert by_upper[1.0]["accuracy"] == 1.0
    assert by_upper[0.1]["count"] == 0 and by_upper[0.1]["accuracy"] is None
    json.dumps(bins, allow_nan=False)


def _sensitivity(labels: np.ndarray, scores: np.ndarray, c: int, threshold: float) -> float:
    positive = labels == c
    return float((scores[positive] >= threshold).mean())


@pytest.mark.parametrize("target", [0.9, 0.7, 1.0])
def test_thresholds_reach_the_target_sensitivity_at_the_highest_possible_threshold(
    target: float,
) -> None:
    logits, labels = _calibrated_sample(500, seed=3)
    probs = softmax(logits)

    thresholds = choose_thresholds(labels, probs, CLASSES, target_sensitivity=target)

    assert set(thresholds) == set(CLASSES)
    for c, name in enumerate(CLASSES):
        t = thresholds[name]
        assert _sensitivity(labels, probs[:, c], c, t) >= target
        # Any higher threshold misses the target: t is the most specific choice.
        higher = np.nextafter(t, 2.0)
        assert _sensitivity(labels, probs[:, c], c, higher) < target


def test_the_sensitivity_target_is_met_exactly_with_a_round_count() -> None:
    # 10 positives and target 0.7: exactly 7 flagged (0.7 * 10 is 7.000000000000001 in floats).
    scores = np.append(np.linspace(0.05, 0.95, 10), 0.5)
    probs = np.stack([1 - scores, scores], axis=1)
    labels = np.array([1] * 10 + [0])

    thresholds = choose_thresholds(labels, probs, ["neg", "pos"], target_sensitivity=0.7)

    assert thresholds["pos"] == pytest.approx(scores[3])
    assert (scores[:10] >= thresholds["pos"]).sum() == 7


def test_youden_thresholds_maximise_sensitivity_plus_specificity() -> None:
    logits, labels = _calibrated_sample(400, seed=4)
    probs = softmax(logits)

    thresholds = choose_thresholds(labels, probs, CLASSES, strategy="youden")

    for c, name in enumerate(CLASSES):
        scores, positive = probs[:, c], labels == c

        def youden(t: float, scores: np.ndarray = scores, positive: np.ndarray = positive) -> float:
            flagged = scores >= t
            return flagged[positive].mean() - flagged[~positive].mean()

        best = max(youden(t) for t in np.unique(scores))
        assert youden(thresholds[name]) == pytest.approx(best)


def test_a_class_without_positives_gets_the_fallback_threshold() -> None:
    probs = softmax(np.random.default_rng(0).normal(size=(6, 3)))

    thresholds = choose_thresholds([0, 1, 0, 1, 0, 1], probs, CLASSES)

    assert thresholds["covid"] == FALLBACK_THRESHOLD
    assert thresholds["normal"] != FALLBACK_THRESHOLD


def test_bad_threshold_settings_are_refused() -> None:
    probs = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="strategy"):
        choose_thresholds([0, 1], probs, CLASSES, strategy="f1")
    with pytest.raises(ValueError, match="target_sensitivity"):
        choose_thresholds([0, 1], probs, CLASSES, target_sensitivity=0.0)
    with pytest.raises(ValueError, match="2 class names for 3"):
        choose_thresholds([0, 1], probs, CLASSES[:2])
