"""The out-of-distribution score (Mahalanobis on pooled features, shrunk covariance) and the cheap
image checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from tests import imagegen
from training.ml.models.architectures import ARCHITECTURES, head_layer
from training.ml.ood import (
    OODError,
    OODReference,
    OODResult,
    fit_reference,
    image_checks,
    ood_result,
    pooled_features,
)

D = 64


def _cloud(n: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Correlated Gaussian features: a low-rank structure plus noise, like pooled CNN features."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(1234).normal(size=(8, D))
    latent = rng.normal(size=(n, 8)) * 3.0
    return (latent @ basis + rng.normal(size=(n, D)) * 0.5) * scale + shift


# --- the reference --------------------------------------------------------------------------------


def test_a_reference_fitted_on_one_distribution_flags_another() -> None:
    reference = fit_reference(_cloud(300, 0), _cloud(200, 1), percentile=99.0)

    inside = reference.scores(_cloud(500, 2))
    shifted = reference.scores(_cloud(500, 3, shift=2.0))
    # Same marginal spread, other correlations: the covariance, not only the mean, matters.
    other = np.random.default_rng(4).normal(size=(500, D)) * _cloud(300, 0).std(axis=0)

    assert (inside > reference.threshold).mean() < 0.05
    assert (shifted > reference.threshold).mean() > 0.95
    assert (reference.scores(other) > reference.threshold).mean() > 0.95
    assert reference.threshold == pytest.approx(np.percentile(reference.scores(_cloud(200, 1)), 99))


def test_more_dimensions_than_images_still_fit_and_score_finitely() -> None:
    rng = np.random.default_rng(0)
    train, val = rng.normal(size=(40, 1280)), rng.normal(size=(20, 1280))

    reference = fit_reference(train, val)

    scores = reference.scores(rng.normal(size=(10, 1280)) + 3.0)
    assert np.isfinite(scores).all() and (scores > reference.threshold).all()
    assert 0.0 < reference.shrinkage <= 1.0
    assert reference.to_summary()["components"] <= 40


def test_it_keeps_at_most_max_components_and_the_file_stays_small(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    reference = fit_reference(rng.normal(size=(600, 1280)), rng.normal(size=(100, 1280)))
    path = tmp_path / "ref.ood.npz"

    reference.save(path)

    assert reference.components.shape == (256, 1280)
    assert path.stat().st_size < 10 * 1024 * 1024


def test_save_and_load_round_trip_without_pickle(tmp_path: Path) -> None:
    reference = fit_reference(_cloud(100, 0), _cloud(50, 1), percentile=95.0)
    path = tmp_path / "ref.npz"
    reference.save(path)

    loaded = OODReference.load(path)

    probe = _cloud(20, 5, shift=1.0)
    np.testing.assert_allclose(loaded.scores(probe), reference.scores(probe), rtol=1e-5)
    assert loaded.to_summary() == reference.to_summary()
    assert loaded.to_summary() == {
        "method": "mahalanobis-ledoit-wolf",
        "threshold": pytest.approx(reference.threshold),
        "percentile": 95.0,
        "n_train": 100,
        "feature_dim": D,
        "components": reference.variances.shape[0],
        "shrinkage": pytest.approx(reference.shrinkage),
    }
    with np.load(path, allow_pickle=False) as data:
        assert all(data[name].dtype != object for name in data.files)


def test_a_damaged_or_foreign_file_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, something=np.zeros(3))

    with pytest.raises(OODError, match="not a readable OOD reference"):
        OODReference.load(broken)
    with pytest.raises(OODError, match="not a readable OOD reference"):
        OODReference.load(foreign)


def test_features_of_another_size_are_refused_with_a_hint() -> None:
    reference = fit_reference(_cloud(50, 0), _cloud(20, 1))

    with pytest.raises(OODError, match="another architecture"):
        reference.scores(np.zeros((2, D + 1)))


@pytest.mark.parametrize(
    ("train", "val", "message"),
    [
        (np.zeros((1, 4)), np.zeros((3, 4)), "at least 2 training images"),
        (np.zeros((5, 4)), np.zeros((3, 5)), "validation features"),
        (np.full((5, 4), np.nan), np.zeros((3, 4)), "NaN"),
    ],
)
def test_it_refuses_features_it_cannot_fit(
    train: np.ndarray, val: np.ndarray, message: str
) -> None:
    with pytest.raises(OODError, match=message):
        fit_reference(train, val)


def test_identical_training_features_do_not_divide_by_zero() -> None:
    reference = fit_reference(np.ones((10, 8)), np.ones((3, 8)))

    assert np.isfinite(reference.scores(np.ones((1, 8)) * 2)).all()


def test_results_say_why_they_are_flagged() -> None:
    over = ood_result(41.2, 18.0, [])
    under = ood_result(3.0, 18.0, [])
    checked = ood_result(None, None, ["nearly uniform image"])

    assert over.flagged and over.reasons == ["unlike the training data (score 41.2 > 18.0)"]
    assert not under.flagged and under.reasons == []
    assert checked.to_dict() == {
        "score": None,
        "threshold": None,
        "flagged": True,
        "reasons": ["nearly uniform image"],
    }
    assert OODResult(score=None, threshold=None, flagged=False).to_dict()["reasons"] == []


# --- features -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch",
    ["resnet18", "mobilenet_v2", "densenet121", "vgg16", "efficientnet_b0", "mobilenet_v3_small"],
)
def test_pooled_features_are_the_classifier_input_of_every_architecture_family(
    arch: str, fresh_model: Callable[[str], nn.Module]
) -> None:
    model = fresh_model(arch).eval()
    batch = torch.randn(2, 3, 64, 64)

    features = pooled_features(model, arch, batch)

    head = head_layer(model, arch)
    assert features.shape == (2, head.in_features)
    with torch.no_grad():
        np.testing.assert_allclose(head(features).numpy(), model(batch).numpy(), atol=1e-4)
    assert not head._forward_pre_hooks, "the hook is removed"


def test_every_architecture_has_a_linear_head_to_hook() -> None:
    # pooled_features hooks head_layer: the table must name an nn.Linear for every arch.
    from training.ml.models.architectures import arch_spec

    assert all(arch_spec(arch).head for arch in ARCHITECTURES)


# --- image checks ---------------------------------------------------------------------------------


def test_a_greyscale_radiograph_like_image_passes_the_checks() -> None:
    assert image_checks(imagegen.make_xray(256, 256, seed=3)) == []
    assert image_checks(imagegen.make_xray(300, 200, mode="RGB", seed=4)) == []


def test_a_colour_photograph_is_named() -> None:
    rng = np.random.default_rng(0)
    photo = np.zeros((128, 128, 3), dtype=np.uint8)
    photo[..., 0] = np.linspace(0, 255, 128)[None, :]
    photo[..., 1] = np.linspace(255, 0, 128)[:, None]
    photo[..., 2] = rng.integers(0, 255, (128, 128))

    assert "a colour photograph, not a radiograph" in image_checks(Image.fromarray(photo))


def test_a_slightly_tinted_radiograph_is_not_a_colour_photograph() -> None:
    grey = np.asarray(imagegen.make_xray(128, 128, seed=1), dtype=np.int16)
    tinted = np.stack([grey + 8, grey, np.maximum(grey - 8, 0)], axis=2).clip(0, 255)

    assert image_checks(Image.fromarray(tinted.astype(np.uint8))) == []


def test_a_uniform_image_is_named() -> None:
    reasons = image_checks(Image.new("L", (200, 200), 128))

    assert len(reasons) == 1 and reasons[0].startswith("nearly uniform image")


@pytest.mark.parametrize("size", [(1, 1), (31, 400)])
def test_a_tiny_image_is_too_small_to_read(size: tuple[int, int]) -> None:
    reasons = image_checks(Image.new("L", size, 0))

    assert reasons == [f"too small to read ({size[0]}x{size[1]} px)"]


def test_text_on_a_page_is_not_a_radiograph() -> None:
    page = Image.new("L", (400, 300), 250)
    draw = ImageDraw.Draw(page)
    for row in range(12):
        draw.text((10, 10 + row * 22), "Patient report: no acute findings " * 2, fill=10)

    reasons = image_checks(page)

    assert any(r.startswith("mostly flat tones") for r in reasons)


def test_a_16_bit_radiograph_passes_the_checks() -> None:
    arr = np.asarray(imagegen.make_xray(128, 128, seed=2), dtype=np.uint16) * 200 + 1000
    assert image_checks(Image.fromarray(arr.astype(np.uint16))) == []
