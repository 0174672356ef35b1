from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.ml.train.metrics import binary_figures, classification_report, roc_curves

CLASSES3 = ["normal", "pneumonia", "covid"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _onehotish(predicted: list[int], k: int, confidence: float = 0.8) -> np.ndarray:
    probs = np.full((len(predicted), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def test_a_hand_computed_three_class_case() -> None:
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    predicted = [0, 0, 1, 1, 2, 2, 2, 2, 0]

    report = classification_report(labels, _onehotish(predicted, 3), CLASSES3)

    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert report["n"] == 9 and report["classes"] == CLASSES3
    assert report["accuracy"] == pytest.approx(6 / 9)
    normal, pneumonia, covid = (report["per_class"][c] for c in CLASSES3)
    assert (normal["tp"], normal["fn"], normal["fp"], normal["tn"]) == (2, 1, 1, 5)
    assert normal["sensitivity"] == pytest.approx(2 / 3)
    assert normal["specificity"] == pytest.approx(5 / 6)
    assert normal["precision"] == pytest.approx(2 / 3)
    assert normal["npv"] == pytest.approx(5 / 6)
    assert normal["f1"] == pytest.approx(2 / 3)
    assert normal["accuracy"] == pytest.approx(7 / 9)
    assert normal["support"] == 3
    assert pneumonia["sensitivity"] == pytest.approx(0.5)
    assert pneumonia["specificity"] == pytest.approx(6 / 7)
    assert covid["sensitivity"] == pytest.approx(0.75)
    assert covid["specificity"] == pytest.approx(4 / 5)
    assert covid["precision"] == pytest.approx(0.75)
    assert report["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3)
    assert report["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3)
    json.dumps(report, allow_nan=False)


def test_auc_is_one_for_a_perfect_ranking_and_zero_for_a_reversed_one() -> None:
    labels = [0, 0, 0, 1, 1, 1]
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    probs = np.stack([1 - scores, scores], axis=1)

    perfect = classification_report(labels, probs, ["neg", "pos"])
    reversed_ = classification_report(labels, probs[:, ::-1], ["neg", "pos"])

    assert perfect["per_class"]["pos"]["auc"] == 1.0
    assert perfect["macro_auc"] == 1.0
    assert reversed_["per_class"]["pos"]["auc"] == 0.0
    assert reversed_["accuracy"] == 0.0


def test_a_small_binary_auc_checked_by_hand() -> None:
    # Pairs (positive, negative): (0.35 vs 0.1) yes, (0.35 vs 0.4) no, (0.8 vs both) yes: 3 of 4.
    labels = [0, 0, 1, 1]
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    probs = np.stack([1 - scores, scores], axis=1)

    report = classification_report(labels, probs, ["neg", "pos"])

    assert report["per_class"]["pos"]["auc"] == pytest.approx(0.75)
    # With two classes the "neg" one-vs-rest AUC is the same number.
    assert report["per_class"]["neg"]["auc"] == pytest.approx(0.75)
    assert report["macro_auc"] == pytest.approx(0.75)


def test_auc_is_none_when_a_class_or_its_complement_is_absent() -> None:
    labels = [0, 0, 0]
    report = classification_report(labels, _onehotish([0, 1, 0], 3), CLASSES3)

    assert [report["per_class"][c]["auc"] for c in CLASSES3] == [None, None, None]
    assert report["macro_auc"] is None
    assert report["per_class"]["covid"]["sensitivity"] is None  # no positives: undefined, not 0
    assert report["per_class"]["covid"]["specificity"] == 1.0
    assert report["per_class"]["pneumonia"]["precision"] == 0.0
    assert report["balanced_accuracy"] == pytest.approx(2 / 3)  # over present classes only
    json.dumps(report, allow_nan=False)


def test_thresholds_add_the_one_vs_rest_operating_point() -> None:
    labels = [0, 0, 0, 1, 1]
    scores = np.array([0.1, 0.35, 0.6, 0.3, 0.9])
    probs = np.stack([1 - scores, scores], axis=1)

    report = classification_report(labels, probs, ["neg", "pos"], thresholds={"pos": 0.3})

    at = report["per_class"]["pos"]["at_threshold"]
    # Flagged (p >= 0.3): 0.35 and 0.6 (negatives), 0.3 and 0.9 (positives).
    assert (at["tp"], at["fp"], at["fn"], at["tn"]) == (2, 2, 0, 1)
    assert at["threshold"] == 0.3
    assert at["sensitivity"] == 1.0 and at["specificity"] == pytest.approx(1 / 3)
    assert at["precision"] == pytest.approx(0.5) and at["npv"] == 1.0
    assert "at_threshold" not in report["per_class"]["neg"]
    # The argmax figures are unchanged by thresholds.
    assert report["per_class"]["pos"]["sensitivity"] == pytest.approx(0.5)


def test_brier_ece_and_log_loss_of_known_predictions() -> None:
    labels = [0, 1, 1, 0]
    perfect = np.eye(2)[labels]
    uniform = np.full((4, 2), 0.5)

    sure = classification_report(labels, perfect, ["a", "b"])
    unsure = classification_report(labels, uniform, ["a", "b"])

    assert sure["brier"] == 0.0 and sure["ece"] == 0.0
    assert sure["log_loss"] == pytest.approx(0.0, abs=1e-12)
    assert unsure["brier"] == pytest.approx(0.5)
    assert unsure["log_loss"] == pytest.approx(np.log(2))


def test_binary_figures_return_none_for_an_undefined_ratio() -> None:
    figures = binary_figures(tp=0, fp=0, fn=0, tn=5)

    assert figures["sensitivity"] is None and figures["precision"] is None
    assert figures["f1"] is None
    assert figures["specificity"] == 1.0 and figures["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("labels", "probs", "message"),
    [
        ([0, 1], np.full((2, 2), 0.5), "3 class names for 2"),
        ([0, 1, 5], np.full((3, 3), 1 / 3), "from 0 to 2"),
        ([0, 1], np.array([[np.nan, 1.0, 0.0], [0.2, 0.3, 0.5]]), "NaN"),
    ],
)
def test_malformed_inputs_are_refused(labels: list[int], probs: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        classification_report(labels, probs, CLASSES3)


def test_roc_curves_are_json_lists_of_at_most_200_points() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 3000)
    logits = rng.normal(size=(3000, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    curves = roc_curves(labels, probs, CLASSES3)

    json.dumps(curves, allow_nan=False)
    for name in CLASSES3:
        curve = curves[name]
        assert curve is not None
        assert 2 < len(curve["fpr"]) <= 200
        assert len(curve["fpr"]) == len(curve["tpr"]) == len(curve["thresholds"])
        assert (curve["fpr"][0], curve["tpr"][0]) == (0.0, 0.0)
        assert (curve["fpr"][-1], curve["tpr"][-1]) == (1.0, 1.0)
        assert curve["fpr"] == sorted(curve["fpr"]) and curve["tpr"] == sorted(curve["tpr"])
        assert max(curve["thresholds"]) <= 1.0
        # The downsampled curve's area still matches the AUC.
        area = np.trapezoid(curve["tpr"], curve["fpr"])
        auc = classification_report(labels, probs, CLASSES3)["per_class"][name]["auc"]
        assert area == pytest.approx(auc, abs=0.01)


def test_a_class_without_positives_has_no_roc_curve() -> None:
    curves = roc_curves([0, 1, 0, 1], _onehotish([0, 1, 1, 1], 3), CLASSES3)

    assert curves["covid"] is None
    assert curves["normal"] is not None
