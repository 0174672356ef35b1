"""The worker loads a version's out-of-distribution reference with its model, once."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile

from tests import imagegen


def _reference_bytes(dim: int = 1280, seed: int = 0) -> bytes:
    from training.ml.ood import fit_reference

    rng = np.random.default_rng(seed)
    reference = fit_reference(rng.normal(size=(40, dim)), rng.normal(size=(20, dim)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ref.ood.npz"
        reference.save(path)
        return path.read_bytes()


@pytest.fixture
def version(model_version, settings):
    settings.CXR_INFERENCE_FREEZE = False  # the reference is under test, not the frozen graph
    model_version.ood_reference.save("ref.ood.npz", ContentFile(_reference_bytes()), save=False)
    model_version.ood_summary = {"threshold": 1.0}
    model_version.save()
    return model_version


def test_the_loaded_predictor_scores_with_the_versions_reference(version):
    from diagnosis.worker import compute
    from training.ml.ood import OODReference

    predictor = compute.predictor_for(version)

    stored = OODReference.load(version.ood_reference.path)
    assert predictor.ood_reference is not None
    assert predictor.ood_reference.threshold == pytest.approx(stored.threshold)
    [result] = predictor.predict([imagegen.make_xray(128, 128, seed=1)])
    assert result.ood.score is not None and result.ood.threshold == pytest.approx(stored.threshold)
    assert compute.predictor_for(version) is predictor  # loaded once, with its reference


def test_a_version_without_a_reference_runs_with_the_image_checks_only(model_version, settings):
    from diagnosis.worker import compute

    settings.CXR_INFERENCE_FREEZE = False
    predictor = compute.predictor_for(model_version)

    assert predictor.ood_reference is None
    [result] = predictor.predict([imagegen.make_xray(128, 128, seed=1)])
    assert result.ood.score is None and not result.ood.flagged


def test_a_damaged_reference_fails_the_load_with_what_to_do(version):
    from diagnosis.worker import compute
    from diagnosis.worker.errors import PredictionFailure

    with open(version.ood_reference.path, "wb") as fh:
        fh.write(b"damaged")

    with pytest.raises(PredictionFailure, match="out-of-distribution reference of model version"):
        compute.predictor_for(version)


def test_a_reference_of_another_architecture_is_refused(model_version, settings):
    from diagnosis.worker import compute
    from diagnosis.worker.errors import PredictionFailure

    settings.CXR_INFERENCE_FREEZE = False
    model_version.ood_reference.save("r.ood.npz", ContentFile(_reference_bytes(512)), save=True)

    with pytest.raises(PredictionFailure, match="belongs to another model"):
        compute.predictor_for(model_version)
