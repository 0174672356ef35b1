from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from tests.training.ml.samples import CLASSES, PREP, cpu_predictor, xray_8bit, xray_16bit
from training.ml.infer.predictor import Predictor
from training.ml.models.architectures import build_model
from training.ml.models.cam import gradcam_target_layer
from training.ml.models.checkpoint import CheckpointMeta, save_checkpoint
from training.ml.models.weights import IncompatibleWeights
from training.ml.preprocessing import to_model_input

MAIN_ARCHS = ["resnet18", "densenet121", "mobilenet_v2", "vgg16", "efficientnet_b0"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- preprocessing -----------------------------------------------------------------------------


# --- prediction --------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", MAIN_ARCHS)
def test_predict_returns_probabilities_label_and_cam_per_image(
    arch: str, fresh_model: Callable[[str], nn.Module]
) -> None:
    predictor = cpu_predictor(fresh_model(arch), arch)
    images = [xray_8bit(), xray_16bit()]

    results = predictor.predict(images)

    assert len(results) == 2
    for result in results:
        assert list(result.probabilities) == CLASSES
        assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert result.label == max(result.probabilities, key=result.probabilities.__getitem__)
        assert result.cam_class == result.label
        assert result.cam.shape == (64, 64) and result.cam.dtype == np.float32
        assert result.cam.min() >= 0.0 and result.cam.max() <= 1.0
    if arch == "resnet18":
        assert all(result.cam.std() > 0.01 for result in results)


def test_a_batch_gives_the_same_results_as_one_image_at_a_time(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    predictor = cpu_predictor(fresh_model("resnet18"))
    images = [xray_8bit(), xray_16bit()]

    batched = predictor.predict(images, cam_classes=["covid", None])
    single = [
        predictor.predict([images[0]], cam_classes=["covid"])[0],
        predictor.predict([images[1]])[0],
    ]

    for b, s in zip(batched, single, strict=True):
        assert b.label == s.label and b.cam_class == s.cam_class
        assert b.probabilities == pytest.approx(s.probabilities, abs=1e-6)
        assert np.allclose(b.cam, s.cam, atol=1e-4)


def test_predict_runs_a_single_forward_pass_per_batch(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    predictor = cpu_predictor(fresh_model("resnet18"))
    calls: list[int] = []
    handle = predictor.model.register_forward_pre_hook(
        lambda module, args: calls.append(args[0].shape[0])
    )
    try:
        predictor.predict([xray_8bit(), xray_16bit(), xray_8bit(60, 60)])
    finally:
        handle.remove()
    assert calls == [3]


def test_explicit_cam_classes_are_honoured(fresh_model: Callable[[str], nn.Module]) -> None:
    predictor = cpu_predictor(fresh_model("resnet18"))
    image = xray_8bit()

    results = predictor.predict([image] * 3, cam_classes=CLASSES)

    assert [r.cam_class for r in results] == CLASSES
    assert len({r.label for r in results}) == 1  # the prediction does not depend on the CAM class
    # Each class gets its own map: they are not all the same picture.
    assert max(np.abs(results[0].cam - r.cam).max() for r in results[1:]) > 0.05


def test_an_unknown_cam_class_or_a_wrong_count_is_refused(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    predictor = cpu_predictor(fresh_model("resnet18"))
    with pytest.raises(ValueError, match="tuberculosis"):
        predictor.predict([xray_8bit()], cam_classes=["tuberculosis"])
    with pytest.raises(ValueError, match="one per image"):
        predictor.predict([xray_8bit()], cam_classes=[None, None])


def test_a_higher_temperature_flattens_the_probabilities(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    model = fresh_model("resnet18")
    with torch.no_grad():
        model.fc.weight.mul_(20)  # make the random model confident enough to see the effect
    image = xray_8bit()

    sharp = cpu_predictor(model, temperature=1.0).predict([image])[0]
    flat = cpu_predictor(model, temperature=2.0).predict([image])[0]

    assert flat.label == sharp.label
    assert max(flat.probabilities.values()) < max(sharp.probabilities.values())
    assert min(flat.probabilities.values()) > min(sharp.probabilities.values())
    # softmax(z / 2) computed from the T=1 probabilities: log p = z - const
    log_p = torch.tensor([sharp.probabilities[c] for c in CLASSES], dtype=torch.float64).log()
    expected = torch.softmax(log_p / 2, dim=0).tolist()
    assert [flat.probabilities[c] for c in CLASSES] == pytest.approx(expected, abs=1e-6)


def test_repeated_predictions_leave_no_hooks_and_no_gradients_behind(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    predictor = cpu_predictor(fresh_model("resnet18"))
    layer = gradcam_target_layer(predictor.model, "resnet18")
    images = [xray_8bit(), xray_16bit()]

    for _ in range(30):
        predictor.predict(images)
        assert not layer._forward_hooks and not layer._backward_hooks
        assert not layer._forward_pre_hooks
        for module in predictor.model.modules():
            assert not module._forward_hooks and not module._backward_hooks
        assert all(p.grad is None for p in predictor.model.parameters())
    assert not [name for name, value in vars(predictor).items() if isinstance(value, torch.Tensor)]


def test_predict_works_inside_torch_no_grad(fresh_model: Callable[[str], nn.Module]) -> None:
    predictor = cpu_predictor(fresh_model("resnet18"))
    with torch.no_grad():
        result = predictor.predict([xray_8bit()])[0]
    assert result.cam.std() > 0.01


def test_densenet_gradcam_matches_a_hand_computed_gradcam(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    """pytorch-grad-cam #147: DenseNet's forward ReLUs the hooked norm5 output in place.

    Without prepare_for_cam the CAM silently comes from rectified activations on CPU (and from
    unrectified ones on GPU); here it must equal Grad-CAM computed by hand on norm5.
    """
    model = fresh_model("densenet121")
    reference = copy.deepcopy(model).eval()
    predictor = cpu_predictor(model, "densenet121")
    image = xray_8bit()

    results = predictor.predict([image] * 3, cam_classes=CLASSES)

    x = to_model_input(image, PREP)[None]
    activations = reference.features(x)
    logits = reference.classifier(
        torch.flatten(nn.functional.adaptive_avg_pool2d(activations.relu(), 1), 1)
    )
    non_constant = 0
    for index, result in enumerate(results):
        assert np.allclose(result.cam, _hand_gradcam(activations, logits[0, index]), atol=1e-3)
        non_constant += int(result.cam.std() > 0.01)
    assert non_constant >= 1


def _hand_gradcam(activations: torch.Tensor, logit: torch.Tensor) -> np.ndarray:
    """Grad-CAM by its definition, normalised and resized as pytorch-grad-cam does."""
    (grads,) = torch.autograd.grad(logit, activations, retain_graph=True)
    cam = (grads.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)[0].relu().detach().numpy()
    cam = cam - cam.min()
    cam = cv2.resize(cam / (cam.max() + 1e-7), (PREP.input_size, PREP.input_size))
    cam = cam - cam.min()
    return cam / (cam.max() + 1e-7)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "efficientnet_b0", "vgg16"])
def test_in_place_activations_stay_below_the_cam_layer_and_the_cam_is_unchanged(
    arch: str, fresh_model: Callable[[str], nn.Module]
) -> None:
    """Below the Grad-CAM layer no graph is recorded, so in-place activations are kept there
    (about a tenth of the forward pass); from that layer on they are off. The CAM must be Grad-CAM
    computed by hand on an untouched copy of the model."""
    model = fresh_model(arch)
    reference = copy.deepcopy(model).eval()
    predictor = cpu_predictor(model, arch, freeze=False)  # frozen below the layer: see below

    target = gradcam_target_layer(predictor.model, arch)
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: order.append(m)) for m in predictor.model.modules()
    ]
    with torch.no_grad():
        predictor.model(to_model_input(xray_8bit(), PREP)[None])
    for hook in hooks:
        hook.remove()
    at = order.index(target)
    assert any(getattr(m, "inplace", False) for m in order[:at]), "kept below the layer"
    assert not any(getattr(m, "inplace", False) for m in order[at:]), "off from the layer on"

    image = xray_8bit()
    results = predictor.predict([image] * 3, cam_classes=CLASSES)
    captured: list[torch.Tensor] = []
    hook = gradcam_target_layer(reference, arch).register_forward_hook(
        lambda m, i, o: captured.append(o)
    )
    logits = reference(to_model_input(image, PREP)[None])
    hook.remove()
    for index, result in enumerate(results):
        assert np.allclose(result.cam, _hand_gradcam(captured[0], logits[0, index]), atol=1e-3)
    probabilities = torch.softmax(logits.detach(), dim=1)[0].tolist()
    assert [results[0].probabilities[c] for c in CLASSES] == pytest.approx(probabilities, abs=1e-5)


def test_predictor_from_file_matches_the_in_memory_model(
    tmp_path: Path, fresh_model: Callable[[str], nn.Module]
) -> None:
    model = fresh_model("mobilenet_v2")
    path = tmp_path / "v1.pt"
    save_checkpoint(
        path, model, CheckpointMeta(arch="mobilenet_v2", classes=CLASSES, preprocessing=PREP)
    )
    image = xray_16bit()
    expected = cpu_predictor(copy.deepcopy(model), "mobilenet_v2").predict([image])[0]

    loaded = Predictor.from_file(
        path, arch="mobilenet_v2", classes=CLASSES, preprocessing=PREP, device="cpu"
    )
    result = loaded.predict([image])[0]

    assert loaded.device == torch.device("cpu")
    assert result.probabilities == pytest.approx(expected.probabilities, abs=1e-6)
    assert np.allclose(result.cam, expected.cam, atol=1e-4)


def test_predictor_from_file_refuses_classes_that_differ_from_the_checkpoint(
    tmp_path: Path, fresh_model: Callable[[str], nn.Module]
) -> None:
    path = tmp_path / "v1.pt"
    save_checkpoint(
        path,
        fresh_model("mobilenet_v2"),
        CheckpointMeta(arch="mobilenet_v2", classes=CLASSES, preprocessing=PREP),
    )
    with pytest.raises(IncompatibleWeights, match="classes"):
        Predictor.from_file(
            path, arch="mobilenet_v2", classes=CLASSES[::-1], preprocessing=PREP, device="cpu"
        )


def test_a_predictor_refuses_a_model_whose_head_does_not_match_the_classes() -> None:
    with pytest.raises(IncompatibleWeights, match="3 outputs"):
        Predictor(
            build_model("mobilenet_v2", 3),
            arch="mobilenet_v2",
            classes=["a", "b"],
            preprocessing=PREP,
            device="cpu",
        )


# --- rendering ---------------------------------------------------------------------------------
