from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.training.ml.imagefolders import CLASSES, square_image
from tests.training.ml.train.fitting import fit_config as _config
from training.ml.infer.predictor import Predictor
from training.ml.models.checkpoint import file_sha256, load_weights_file
from training.ml.ood import OODReference
from training.ml.preprocessing import Preprocessing
from training.ml.train.config import DEFAULT_LR
from training.ml.train.evaluate import evaluate_checkpoint
from training.ml.train.fit import FitResult, fit
from training.ml.train.scan import DatasetError, FolderScan


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def trained(
    folder: tuple[Path, FolderScan, dict], tmp_path_factory: pytest.TempPathFactory
) -> tuple[FitResult, list[dict]]:
    """One real fit shared by several tests: resnet18 from scratch on the two-square task."""
    root, scan, split = folder
    events: list[dict] = []
    torch.manual_seed(0)
    result = fit(
        _config(epochs=3, early_stopping_patience=None),
        root,
        scan,
        split,
        checkpoint_path=tmp_path_factory.mktemp("ckpt") / "model.pt",
        progress_callback=events.append,
        progress_interval_s=0.0,
    )
    return result, events


# --- the whole recipe ----------------------------------------------------------------------------


def test_fit_lowers_the_training_loss_and_keeps_the_best_epoch(trained) -> None:
    result, _ = trained

    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == 3
    assert losses[-1] < 0.5 * losses[0]
    assert result.history[-1]["train_acc"] >= 0.9
    val_losses = [row["val_loss"] for row in result.history]
    assert result.best_epoch == 1 + int(np.argmin(val_losses))
    assert not result.cancelled and not result.stopped_early
    for row in result.history:
        assert {
            "epoch",
            "train_loss",
            "train_acc",
            "val_loss",
            "val_acc",
            "lr",
            "seconds",
            "images_per_s",
        } <= set(row)
        assert row["images_per_s"] > 0
    # Cosine schedule: the learning rate goes down from the configured one.
    assert result.history[0]["lr"] == pytest.approx(1e-3)
    assert result.history[-1]["lr"] < result.history[0]["lr"]


def test_fit_writes_a_checkpoint_the_predictor_loads_with_calibration_in_its_meta(
    trained, folder
) -> None:
    result, _ = trained
    root, scan, _ = folder

    assert result.sha256 == file_sha256(result.checkpoint_path)
    _, meta = load_weights_file(result.checkpoint_path)
    assert meta is not None
    assert meta.arch == "resnet18" and meta.classes == CLASSES
    assert meta.temperature == pytest.approx(result.temperature) and meta.temperature > 0
    assert meta.thresholds == result.thresholds and set(meta.thresholds) == set(CLASSES)
    assert meta.extra["best_epoch"] == result.best_epoch
    assert meta.extra["config"]["arch"] == "resnet18"

    predictor = Predictor.from_file(
        result.checkpoint_path,
        arch=meta.arch,
        classes=meta.classes,
        preprocessing=Preprocessing.from_dict(result.preprocessing),
        device="cpu",
        temperature=meta.temperature,
    )
    outputs = predictor.predict([square_image(0, seed=99), square_image(1, seed=98)])
    assert [out.label for out in outputs] == CLASSES
    assert sum(outputs[0].probabilities.values()) == pytest.approx(1.0)


def test_fit_reports_test_metrics_before_and_after_temperature_scaling(trained) -> None:
    result, _ = trained

    metrics = result.test_metrics
    assert metrics is not None and result.val_metrics is not None
    assert metrics["n"] == 6 and metrics["classes"] == CLASSES
    assert metrics["accuracy"] >= 5 / 6
    assert {"ece_uncalibrated", "ece_calibrated", "nll_uncalibrated", "nll_calibrated"} <= set(
        metrics
    )
    assert metrics["temperature"] == result.temperature
    for name in CLASSES:
        assert metrics["per_class"][name]["at_threshold"]["threshold"] == result.thresholds[name]
    assert set(result.test_curves) == {"roc", "reliability", "reliability_uncalibrated"}
    assert result.test_output is not None and result.test_output.n == 6
    assert result.trainable_params == result.total_params  # strategy "full"
    json.dumps(result.to_dict(), allow_nan=False)


def test_fit_writes_an_ood_reference_beside_the_checkpoint_thresholded_on_val(
    trained, folder
) -> None:
    result, _ = trained
    root, scan, split = folder

    assert result.ood_path == f"{result.checkpoint_path}.ood.npz"
    reference = OODReference.load(result.ood_path)
    assert reference.n_train == len(split["train"]) and reference.feature_dim == 512
    summary = result.ood_summary
    assert summary is not None and summary["threshold"] == pytest.approx(reference.threshold)
    assert summary["method"] == "mahalanobis-ledoit-wolf" and summary["percentile"] == 99.0
    # The test split is in distribution: the reference flags few of its images.
    assert 0.0 <= summary["test_flagged_share"] <= 0.5
    assert result.test_output is not None and result.test_output.features is not None
    assert result.test_output.features.shape == (6, 512)
    # The validation scores put 1 % over the threshold: at most one of its 6 images.
    val = result.val_output
    assert val is not None and val.n == 6

    predictor = Predictor.from_file(
        result.checkpoint_path,
        arch="resnet18",
        classes=CLASSES,
        preprocessing=Preprocessing.from_dict(result.preprocessing),
        device="cpu",
        freeze=False,
        ood_reference=reference,
    )
    [inside, noise] = predictor.predict(
        [
            square_image(0, seed=97),
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)),
        ]
    )
    assert inside.ood.score is not None and noise.ood.score is not None
    assert noise.ood.flagged and noise.ood.score > inside.ood.score
    json.dumps(result.to_dict(), allow_nan=False)


def test_fit_reports_progress_for_every_phase(trained) -> None:
    _, events = trained

    phases = [event["phase"] for event in events]
    assert {"train", "val", "calibrate", "ood", "test"} == set(phases)
    assert phases.index("calibrate") > max(i for i, p in enumerate(phases) if p == "val")
    assert phases.index("ood") > phases.index("calibrate")
    for event in events:
        assert set(event) == {
            "phase",
            "epoch",
            "epochs",
            "step",
            "steps",
            "loss",
            "eta_s",
            "images_per_s",
        }
        assert event["eta_s"] >= 0 and event["epochs"] == 3
        assert 0 <= event["step"] <= event["steps"]
    train_events = [e for e in events if e["phase"] == "train"]
    assert [e["epoch"] for e in train_events] == sorted(e["epoch"] for e in train_events)
    assert all(e["loss"] > 0 for e in train_events)


def test_evaluate_checkpoint_reproduces_the_test_metrics_even_with_reordered_classes(
    trained, folder
) -> None:
    result, _ = trained
    root, scan, split = folder
    # The same images, listed under a dataset whose classes come in the other order.
    swapped = [(path, 1 - label) for path, label in scan.samples]

    same = evaluate_checkpoint(result.checkpoint_path, root, scan.samples, split["test"], CLASSES)
    reordered = evaluate_checkpoint(
        result.checkpoint_path, root, swapped, split["test"], CLASSES[::-1]
    )

    for evaluation in (same, reordered):
        assert evaluation["metrics"]["accuracy"] == pytest.approx(result.test_metrics["accuracy"])
        assert evaluation["metrics"]["confusion_matrix"] == result.test_metrics["confusion_matrix"]
    with pytest.raises(DatasetError, match="does not know"):
        evaluate_checkpoint(result.checkpoint_path, root, scan.samples, [0], ["left", "other"])


def test_evaluate_checkpoint_scores_each_image_against_the_ood_reference(trained, folder) -> None:
    result, _ = trained
    root, scan, split = folder
    reference = OODReference.load(result.ood_path)

    plain = evaluate_checkpoint(result.checkpoint_path, root, scan.samples, split["test"], CLASSES)
    scored = evaluate_checkpoint(
        result.checkpoint_path,
        root,
        scan.samples,
        split["test"],
        CLASSES,
        ood_reference=reference,
    )

    assert plain["metrics"]["ood"] is None and plain["predictions"].ood_flagged is None
    ood = scored["metrics"]["ood"]
    predictions = scored["predictions"]
    assert ood["n"] == 6 and ood["threshold"] == reference.threshold
    # The same images and weights as fit's test pass: the same share over the threshold.
    assert ood["flagged_share"] == pytest.approx(result.ood_summary["test_flagged_share"])
    np.testing.assert_array_equal(
        predictions.ood_flagged, predictions.ood_scores > reference.threshold
    )
    assert ood["flagged"] == int(predictions.ood_flagged.sum())


# --- strategies ----------------------------------------------------------------------------------


# --- one epoch, evaluation -------------------------------------------------------------------------


# --- fit: cancellation, early stopping, options ----------------------------------------------------


@pytest.mark.parametrize("imbalance", ["sampler", "none"])
def test_fit_runs_with_each_imbalance_option_and_a_head_warmup(
    folder, tmp_path, imbalance: str
) -> None:
    root, scan, split = folder
    config = _config(
        arch="mobilenet_v2",
        imbalance=imbalance,
        epochs=2,
        warmup_head_epochs=1,
        max_steps_per_epoch=1,
        augment="cxr",
        hflip=True,
    )

    result = fit(config, root, scan, split, checkpoint_path=tmp_path / "model.pt")

    assert [row["phase"] for row in result.history] == ["head", "full"]
    assert result.history[0]["lr"] == pytest.approx(DEFAULT_LR["head"])
    assert result.history[1]["lr"] == pytest.approx(1e-3)
    assert result.trainable_params == result.total_params
    assert result.history[0]["train_images"] == 6


def test_fit_is_reproducible_for_a_seed(folder, tmp_path) -> None:
    root, scan, split = folder

    no_test = {**split, "test": []}  # nothing to measure here: skip the test pass

    def run(seed: int) -> list[float]:
        config = _config(arch="mobilenet_v2", max_steps_per_epoch=2, seed=seed, augment="cxr")
        result = fit(config, root, scan, no_test, checkpoint_path=tmp_path / f"{seed}.pt")
        assert result.test_metrics is None
        return [result.history[0]["train_loss"], result.history[0]["val_loss"]]

    first = run(1)
    assert run(1) == first
    assert run(2) != first


def test_fit_takes_a_plain_sample_list_with_class_names(folder, tmp_path) -> None:
    root, scan, split = folder

    with pytest.raises(DatasetError, match="classes="):
        fit(_config(), root, scan.samples, split, checkpoint_path=tmp_path / "m.pt")
    with pytest.raises(DatasetError, match="both the train and the val"):
        fit(
            _config(),
            root,
            scan,
            {**split, "val": split["train"][:1]},
            checkpoint_path=tmp_path / "m.pt",
        )


# --- configuration ---------------------------------------------------------------------------------


def test_a_run_with_tta_calibrates_and_tests_on_the_averaged_views(folder, tmp_path) -> None:
    root, scan, split = folder
    config = _config(max_steps_per_epoch=2, tta=True)

    result = fit(config, root, scan, split, checkpoint_path=tmp_path / "model.pt")

    assert result.config is not None and result.config["tta"] is True
    # evaluate_checkpoint follows the stored recipe (TTA on) unless told otherwise.
    stored = evaluate_checkpoint(result.checkpoint_path, root, scan.samples, split["test"], CLASSES)
    plain = evaluate_checkpoint(
        result.checkpoint_path, root, scan.samples, split["test"], CLASSES, tta=False
    )
    assert result.test_output is not None
    np.testing.assert_allclose(stored["output"].logits, result.test_output.logits, atol=1e-4)
    assert not np.allclose(plain["output"].logits, stored["output"].logits, atol=1e-6)
