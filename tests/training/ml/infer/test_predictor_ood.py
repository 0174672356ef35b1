"""The predictor's out-of-distribution score: the same forward pass as the logits and Grad-CAM."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests import imagegen
from tests.training.ml.samples import CLASSES, PREP, cpu_predictor, xray_8bit
from training.ml.infer.predictor import Predictor
from training.ml.models.checkpoint import CheckpointMeta, save_checkpoint
from training.ml.models.weights import IncompatibleWeights
from training.ml.ood import OODReference, fit_reference, pooled_features
from training.ml.preprocessing import batch_model_input


def _xrays(n: int, seed: int) -> list[Image.Image]:
    return [imagegen.make_xray(96, 96, seed=seed + i) for i in range(n)]


def _reference(model: nn.Module, arch: str, seed: int = 0) -> OODReference:
    train = pooled_features(model.eval(), arch, batch_model_input(_xrays(24, seed), PREP))
    val = pooled_features(model, arch, batch_model_input(_xrays(8, seed + 100), PREP))
    return fit_reference(train.numpy(), val.numpy(), percentile=99.0)


@pytest.mark.parametrize(("arch", "freeze"), [("resnet18", True), ("mobilenet_v2", False)])
def test_the_score_is_the_reference_score_of_the_models_own_features(
    arch: str, freeze: bool, fresh_model: Callable[[str], nn.Module]
) -> None:
    model = fresh_model(arch)
    reference = _reference(model, arch)
    images = [xray_8bit(), imagegen.make_xray(120, 90, seed=77)]
    expected = reference.scores(
        pooled_features(copy.deepcopy(model).eval(), arch, batch_model_input(images, PREP)).numpy()
    )
    predictor = cpu_predictor(model, arch, ood_reference=reference, freeze=freeze)
    calls = []
    predictor.model.register_forward_hook(lambda *_: calls.append(1))

    results = predictor.predict(images)

    assert len(calls) == 1, "one forward pass for logits, CAM and features"
    got = [r.ood.score for r in results]
    # Folded BatchNorm and the frozen graph round a little differently from the plain model.
    np.testing.assert_allclose(got, expected, rtol=2e-3)
    assert all(r.ood.threshold == reference.threshold for r in results)
    assert all(r.ood.flagged == (r.ood.score > reference.threshold) for r in results)


def test_an_image_unlike_the_reference_is_flagged_with_its_reason(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    model = fresh_model("resnet18")
    reference = _reference(model, "resnet18")
    predictor = cpu_predictor(model, "resnet18", ood_reference=reference, freeze=False)
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))

    [inside, outside] = predictor.predict([imagegen.make_xray(96, 96, seed=500), noise])

    assert not inside.ood.flagged and inside.ood.reasons == []
    assert outside.ood.flagged
    assert outside.ood.reasons[0].startswith("unlike the training data (score ")
    assert "a colour photograph, not a radiograph" in outside.ood.reasons


def test_without_a_reference_only_the_image_checks_flag(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    predictor = cpu_predictor(fresh_model("resnet18"), freeze=False)

    [xray, blank] = predictor.predict([xray_8bit(), Image.new("L", (64, 64), 200)])

    assert xray.ood.to_dict() == {"score": None, "threshold": None, "flagged": False, "reasons": []}
    assert blank.ood.score is None and blank.ood.flagged
    assert blank.ood.reasons[0].startswith("nearly uniform image")


def test_a_one_pixel_image_gets_probabilities_and_is_flagged(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    predictor = cpu_predictor(fresh_model("resnet18"), freeze=False)

    [result] = predictor.predict([Image.new("L", (1, 1), 90)])

    assert sum(result.probabilities.values()) == pytest.approx(1.0)
    assert result.ood.flagged and result.ood.reasons == ["too small to read (1x1 px)"]


def test_a_reference_of_another_model_is_refused(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    reference = _reference(fresh_model("mobilenet_v2"), "mobilenet_v2")  # 1280 features

    with pytest.raises(IncompatibleWeights, match="belongs to another model"):
        cpu_predictor(fresh_model("resnet18"), "resnet18", ood_reference=reference, freeze=False)


def test_from_file_passes_the_reference_on(
    tmp_path: Path, fresh_model: Callable[[str], nn.Module]
) -> None:
    model = fresh_model("resnet18")
    reference = _reference(model, "resnet18")
    path = tmp_path / "m.pt"
    save_checkpoint(
        path, model, CheckpointMeta(arch="resnet18", classes=CLASSES, preprocessing=PREP)
    )
    reference.save(tmp_path / "m.pt.ood.npz")

    predictor = Predictor.from_file(
        path,
        arch="resnet18",
        classes=CLASSES,
        preprocessing=PREP,
        device="cpu",
        freeze=False,
        ood_reference=OODReference.load(tmp_path / "m.pt.ood.npz"),
    )
    [result] = predictor.predict([xray_8bit()])

    assert result.ood.score is not None and result.ood.threshold == pytest.approx(
        reference.threshold
    )
    torch.testing.assert_close(
        torch.tensor(result.ood.score),
        torch.tensor(
            float(
                reference.scores(
                    pooled_features(
                        model.eval(), "resnet18", batch_model_input([xray_8bit()], PREP)
                    ).numpy()
                )[0]
            ),
            dtype=torch.float32,
        ),
        rtol=2e-3,
        atol=0,
    )
