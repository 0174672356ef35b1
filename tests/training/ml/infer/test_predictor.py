from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from training.ml.architectures import IncompatibleWeights, build_model, gradcam_target_layer
from training.ml.checkpoint import CheckpointMeta, save_checkpoint
from training.ml.inference import Predictor, cam_to_heatmap_rgba, render_overlay
from training.ml.preprocessing import Preprocessing, batch_model_input, to_model_input

CLASSES = ["normal", "pneumonia", "covid"]
PREP = Preprocessing(input_size=64)  # small inputs keep VGG16 and DenseNet fast on CPU
MAIN_ARCHS = ["resnet18", "densenet121", "mobilenet_v2", "vgg16", "efficientnet_b0"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def fresh_model() -> Callable[[str], nn.Module]:
    cache: dict[str, nn.Module] = {}

    def make(arch: str) -> nn.Module:
        if arch not in cache:
            torch.manual_seed(0)
            cache[arch] = build_model(arch, len(CLASSES))
        return copy.deepcopy(cache[arch])

    return make


def _predictor(model: nn.Module, arch: str = "resnet18", **kwargs: object) -> Predictor:
    return Predictor(model, arch=arch, classes=CLASSES, preprocessing=PREP, device="cpu", **kwargs)


def _xray_8bit(width: int = 100, height: int = 80) -> Image.Image:
    """Mode L: a dark field with two bright 'lungs' and some noise, so CAMs have structure."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:height, 0:width]
    lungs = np.exp(
        -(((xx - width * 0.3) / (width * 0.12)) ** 2 + ((yy - height * 0.5) / (height * 0.3)) ** 2)
    )
    lungs += np.exp(
        -(((xx - width * 0.7) / (width * 0.12)) ** 2 + ((yy - height * 0.5) / (height * 0.3)) ** 2)
    )
    pixels = 30 + 180 * lungs + rng.normal(0, 10, lungs.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _xray_16bit(width: int = 90, height: int = 120) -> Image.Image:
    """Mode I;16 with a 12-bit range, as DICOM-derived PNGs are."""
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 4096, (height, width)).astype(np.uint16)
    pixels[:, : width // 3] //= 8
    image = Image.fromarray(pixels)
    assert image.mode == "I;16"
    return image


# --- preprocessing -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_any_image_mode_becomes_a_normalised_3_channel_square(mode: str) -> None:
    gray = _xray_8bit(90, 60)
    image = (
        gray.convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.asarray(gray).astype(np.uint16) * 16)
    )
    tensor = to_model_input(image, PREP)
    assert tensor.shape == (3, 64, 64) and tensor.dtype == torch.float32
    pixels = tensor * torch.tensor(PREP.std)[:, None, None] + torch.tensor(PREP.mean)[:, None, None]
    assert torch.allclose(pixels[0], pixels[1], atol=1e-5) and torch.allclose(
        pixels[0], pixels[2], atol=1e-5
    )
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_a_uniform_image_is_normalised_with_mean_and_std() -> None:
    tensor = to_model_input(Image.new("L", (30, 50), 255), PREP)
    expected = [(1 - m) / s for m, s in zip(PREP.mean, PREP.std, strict=True)]
    assert torch.allclose(tensor[:, 10, 10], torch.tensor(expected), atol=1e-5)


def test_a_16_bit_image_is_scaled_to_its_range_not_clipped_at_255() -> None:
    pixels = (np.tile(np.linspace(0, 4095, 128), (32, 1))).astype(np.uint16)
    tensor = to_model_input(Image.fromarray(pixels), PREP)
    gray = tensor[0] * PREP.std[0] + PREP.mean[0]
    assert gray[:, 0].max() < 0.05 and gray[:, -1].min() > 0.95
    assert (gray > 0.99).float().mean() < 0.1  # Pillow's convert("L") would saturate ~94% of it


def test_the_whole_image_is_squashed_not_centre_cropped() -> None:
    pixels = np.zeros((100, 300), dtype=np.uint8)
    pixels[:, :15] = 255  # a bright strip along the left edge, where a centre crop would cut
    gray = to_model_input(Image.fromarray(pixels), PREP)[0]
    assert gray[:, 0].min() > gray[:, 32].max() + 1.0


def test_batch_model_input_stacks_images_of_different_sizes() -> None:
    batch = batch_model_input([_xray_8bit(), _xray_16bit()], PREP)
    assert batch.shape == (2, 3, 64, 64)


def test_preprocessing_round_trips_through_a_plain_dict_and_refuses_typos() -> None:
    prep = Preprocessing(input_size=96, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    with pytest.raises(ValueError, match="size"):
        Preprocessing.from_dict({"size": 96})
    with pytest.raises(ValueError, match="input_size"):
        Preprocessing(input_size=8)


# --- prediction --------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", MAIN_ARCHS)
def test_predict_returns_probabilities_label_and_cam_per_image(
    arch: str, fresh_model: Callable[[str], nn.Module]
) -> None:
    predictor = _predictor(fresh_model(arch), arch)
    images = [_xray_8bit(), _xray_16bit()]

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
    predictor = _predictor(fresh_model("resnet18"))
    images = [_xray_8bit(), _xray_16bit()]

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
    predictor = _predictor(fresh_model("resnet18"))
    calls: list[int] = []
    handle = predictor.model.register_forward_pre_hook(
        lambda module, args: calls.append(args[0].shape[0])
    )
    try:
        predictor.predict([_xray_8bit(), _xray_16bit(), _xray_8bit(60, 60)])
    finally:
        handle.remove()
    assert calls == [3]


def test_explicit_cam_classes_are_honoured(fresh_model: Callable[[str], nn.Module]) -> None:
    predictor = _predictor(fresh_model("resnet18"))
    image = _xray_8bit()

    results = predictor.predict([image] * 3, cam_classes=CLASSES)

    assert [r.cam_class for r in results] == CLASSES
    assert len({r.label for r in results}) == 1  # the prediction does not depend on the CAM class
    # Each class gets its own map: they are not all the same picture.
    assert max(np.abs(results[0].cam - r.cam).max() for r in results[1:]) > 0.05


def test_an_unknown_cam_class_or_a_wrong_count_is_refused(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    predictor = _predictor(fresh_model("resnet18"))
    with pytest.raises(ValueError, match="tuberculosis"):
        predictor.predict([_xray_8bit()], cam_classes=["tuberculosis"])
    with pytest.raises(ValueError, match="one per image"):
        predictor.predict([_xray_8bit()], cam_classes=[None, None])


def test_a_higher_temperature_flattens_the_probabilities(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    model = fresh_model("resnet18")
    with torch.no_grad():
        model.fc.weight.mul_(20)  # make the random model confident enough to see the effect
    image = _xray_8bit()

    sharp = _predictor(model, temperature=1.0).predict([image])[0]
    flat = _predictor(model, temperature=2.0).predict([image])[0]

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
    predictor = _predictor(fresh_model("resnet18"))
    layer = gradcam_target_layer(predictor.model, "resnet18")
    images = [_xray_8bit(), _xray_16bit()]

    for _ in range(30):
        predictor.predict(images)
        assert not layer._forward_hooks and not layer._backward_hooks
        assert not layer._forward_pre_hooks
        for module in predictor.model.modules():
            assert not module._forward_hooks and not module._backward_hooks
        assert all(p.grad is None for p in predictor.model.parameters())
    assert not [name for name, value in vars(predictor).items() if isinstance(value, torch.Tensor)]


def test_predict_works_inside_torch_no_grad(fresh_model: Callable[[str], nn.Module]) -> None:
    predictor = _predictor(fresh_model("resnet18"))
    with torch.no_grad():
        result = predictor.predict([_xray_8bit()])[0]
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
    predictor = _predictor(model, "densenet121")
    image = _xray_8bit()

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
    cam = (
        (grads.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)[0].relu().detach().numpy()
    )
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
    predictor = _predictor(model, arch, freeze=False)  # frozen below the layer: see below

    target = gradcam_target_layer(predictor.model, arch)
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: order.append(m)) for m in predictor.model.modules()
    ]
    with torch.no_grad():
        predictor.model(to_model_input(_xray_8bit(), PREP)[None])
    for hook in hooks:
        hook.remove()
    at = order.index(target)
    assert any(getattr(m, "inplace", False) for m in order[:at]), "kept below the layer"
    assert not any(getattr(m, "inplace", False) for m in order[at:]), "off from the layer on"

    image = _xray_8bit()
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
    image = _xray_16bit()
    expected = _predictor(copy.deepcopy(model), "mobilenet_v2").predict([image])[0]

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


def test_the_heatmap_is_rgba_of_the_requested_size_and_clear_where_the_cam_is_low() -> None:
    cam = np.zeros((64, 64), dtype=np.float32)
    cam[:, 32:] = 1.0

    heatmap = cam_to_heatmap_rgba(cam, (200, 120))

    assert heatmap.mode == "RGBA" and heatmap.size == (200, 120)
    rgba = np.asarray(heatmap)
    assert (rgba[:, :80, 3] == 0).all()
    assert (rgba[:, 120:, 3] == 220).all()
    assert not np.array_equal(rgba[0, 0, :3], rgba[0, -1, :3])  # low and high get different colours


def test_the_overlay_is_rgb_downscaled_to_max_side_and_untouched_where_the_cam_is_zero() -> None:
    image = _xray_16bit(2000, 1500)
    cam = np.zeros((64, 64), dtype=np.float32)
    cam[20:40, 20:40] = 1.0

    overlay = render_overlay(image, cam, opacity=0.6, max_side=1024)

    assert overlay.mode == "RGB" and overlay.size == (1024, 768)
    pixels = np.asarray(overlay).astype(int)
    corner = pixels[:100, :100]
    assert (corner[..., 0] == corner[..., 1]).all() and (corner[..., 1] == corner[..., 2]).all()
    centre = pixels[400:440, 500:540]
    assert np.abs(centre[..., 0] - centre[..., 2]).mean() > 10  # coloured where the model looked


@pytest.mark.parametrize("size", [(2500, 2049), (1250, 1025), (3001, 1000)])
def test_the_overlay_shrinks_with_averaging_not_by_picking_pixels(size) -> None:
    """1-pixel stripes (the worst case for aliasing) come out grey at any factor, as area
    averaging leaves them (36..164 here), not as bands of black and white."""
    width, height = size
    stripes = np.zeros((height, width), dtype=np.uint8)
    stripes[:, ::2] = 200
    overlay = render_overlay(Image.fromarray(stripes), np.zeros((7, 7), dtype=np.float32))
    scale = 1024 / max(size)
    assert overlay.size == (round(width * scale), round(height * scale))
    grey = np.asarray(overlay)[..., 0].astype(int)
    assert abs(grey.mean() - 100) < 3
    # A pixel pick (OpenCV's bilinear, Pillow's box) leaves 0 and 200 at these factors.
    assert grey.min() > 30 and grey.max() < 170


def test_a_small_image_is_not_upscaled_and_zero_opacity_shows_the_xray_only() -> None:
    image = _xray_8bit(100, 80)
    overlay = render_overlay(image, np.ones((64, 64), dtype=np.float32), opacity=0.0)
    assert overlay.size == (100, 80)
    assert np.array_equal(np.asarray(overlay), np.asarray(image.convert("RGB")))


def test_batchnorm_is_folded_into_convs_except_the_cam_layer(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    model = fresh_model("mobilenet_v2")
    before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    predictor = _predictor(model, "mobilenet_v2")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in predictor.model.modules()) == 0 < before
    assert isinstance(predictor.model.features[-1], nn.Sequential)  # the CAM layer, still there
    assert not any(p.requires_grad for p in predictor.model.parameters())

    densenet = _predictor(fresh_model("densenet121"), "densenet121")
    assert isinstance(densenet.model.features.norm5, nn.BatchNorm2d)  # the CAM layer itself


def test_a_conv_and_batchnorm_that_are_not_chained_are_left_alone() -> None:
    """Registered side by side but applied to different tensors: folding would change outputs."""
    from training.ml.architectures import fold_batchnorm

    class SideBySide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) + self.bn(x)

    model = SideBySide()
    model.bn.running_mean.fill_(0.5)
    model.bn.running_var.fill_(2.0)
    model.eval()
    assert fold_batchnorm(model, input_size=16) is model
    assert isinstance(model.bn, nn.BatchNorm2d)


@pytest.fixture
def frozen_is_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    """freeze_below keeps the graph only when it times faster; make it so, whatever the host."""
    from training.ml import architectures

    calls = iter(range(1000))
    monkeypatch.setattr(architectures, "_timed_call", lambda model, x: 1.0 / (1 + next(calls)))


def test_a_frozen_graph_that_times_the_same_as_eager_is_kept(
    fresh_model: Callable[[str], nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tie (or a graph within the timing's noise of eager) keeps the graph: on a busy host the
    two timings come out close even where the graph is a fifth faster."""
    from training.ml import architectures

    monkeypatch.setattr(architectures, "_timed_call", lambda model, x: 1.0)
    predictor = _predictor(fresh_model("resnet18"))
    assert predictor.execution.startswith("frozen graph for"), predictor.execution
    assert "(1000 -> 1000 ms per image)" in predictor.execution


def test_the_frozen_graph_and_the_eager_model_are_timed_in_turns(
    fresh_model: Callable[[str], nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow moment of the host must slow both alike: each round times eager, then the graph,
    and the fastest call of each is compared."""
    from training.ml import architectures

    timed = []

    def timed_call(model: nn.Module, x: torch.Tensor) -> float:
        frozen = any(isinstance(m, architectures._FrozenGraph) for m in model.modules())
        timed.append("frozen" if frozen else "eager")
        return 0.5 if frozen else 1.0

    monkeypatch.setattr(architectures, "_timed_call", timed_call)
    predictor = _predictor(fresh_model("resnet18"))
    assert timed == ["eager", "frozen"] * 5
    assert predictor.execution.endswith("(1000 -> 500 ms per image)")
    assert any(isinstance(m, architectures._FrozenGraph) for m in predictor.model.modules())


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "densenet121", "vgg16"])
def test_layers_below_the_cam_layer_run_as_a_frozen_graph_with_the_same_results(
    arch: str, fresh_model: Callable[[str], nn.Module], frozen_is_faster: None
) -> None:
    """The Sequential holding the Grad-CAM layer (features, ResNet's layer4 with its stem and
    stages before it) loses its layers below that layer to one frozen TorchScript graph; the
    probabilities and CAMs are the eager model's, at any batch size."""
    from training.ml.architectures import _FrozenGraph

    model = fresh_model(arch)
    eager = _predictor(copy.deepcopy(model), arch, freeze=False)
    frozen = _predictor(model, arch)
    assert frozen.execution.startswith("frozen graph for"), frozen.execution
    assert eager.execution == "eager"
    assert sum(isinstance(m, _FrozenGraph) for m in frozen.model.modules()) == 1
    assert gradcam_target_layer(frozen.model, arch) is frozen._target_layer
    images = [_xray_8bit(), _xray_16bit(), _xray_8bit(60, 90)]
    for batch in (images[:1], images):
        for a, b in zip(eager.predict(batch, cam_classes=[CLASSES[1]] * len(batch)),
                        frozen.predict(batch, cam_classes=[CLASSES[1]] * len(batch)), strict=True):
            assert a.label == b.label
            assert [a.probabilities[c] for c in CLASSES] == pytest.approx(
                [b.probabilities[c] for c in CLASSES], abs=1e-5)
            assert np.allclose(a.cam, b.cam, atol=1e-3)
    layer = frozen._target_layer
    for _ in range(3):
        frozen.predict(images)
    assert not layer._forward_hooks and not layer._backward_hooks
    assert all(p.grad is None for p in frozen.model.parameters())


def test_a_frozen_graph_that_is_slower_or_fails_leaves_the_model_eager(
    fresh_model: Callable[[str], nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.ml import architectures

    # Timed in turns, eager first: the graph a tenth slower in every round.
    calls = iter(range(1000))
    monkeypatch.setattr(architectures, "_timed_call",
                        lambda model, x: 1.0 if next(calls) % 2 == 0 else 1.1)
    model = fresh_model("resnet18")
    blocks = len(model.layer4)
    predictor = _predictor(model)
    assert predictor.execution.startswith("eager (frozen graph slower: 1000 -> 1100 ms")
    assert not any(isinstance(m, architectures._FrozenGraph) for m in predictor.model.modules())
    assert type(predictor.model.conv1) is nn.Conv2d and len(predictor.model.layer4) == blocks

    def broken_trace(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(torch.jit, "trace", broken_trace)
    predictor = _predictor(fresh_model("mobilenet_v2"), "mobilenet_v2")
    assert predictor.execution == "eager (RuntimeError)"
    assert len(predictor.model.features) == 19
    assert predictor.predict([_xray_8bit()])[0].cam.std() > 0.01
