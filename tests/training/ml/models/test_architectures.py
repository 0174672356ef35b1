from __future__ import annotations

import os
import urllib.error
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from training.ml.errors import MLError
from training.ml.models.architectures import (
    ARCHITECTURES,
    UnknownArchitecture,
    build_model,
    default_preprocessing,
    head_parameters,
)
from training.ml.models.cam import gradcam_target_layer, prepare_for_cam
from training.ml.models.weights import (
    IncompatibleWeights,
    MissingPretrainedWeights,
    load_backbone_weights,
)

MAIN_ARCHS = ["resnet18", "densenet121", "mobilenet_v2", "vgg16", "efficientnet_b0"]
HEAD = {
    "resnet18": "fc",
    "densenet121": "classifier",
    "mobilenet_v2": "classifier.1",
    "vgg16": "classifier.6",
    "efficientnet_b0": "classifier.1",
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def network_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The true boundary: every download fails as it does on an air-gapped hospital network."""
    calls: list[str] = []

    def refuse(request: object, *args: object, **kwargs: object) -> None:
        calls.append(getattr(request, "full_url", str(request)))
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    return calls


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case something called set_dir()
    return home


def _imagenet_filename(arch: str) -> str:
    return os.path.basename(get_model_weights(arch).DEFAULT.url)


# --- building --------------------------------------------------------------------------------


def test_the_required_architectures_are_supported() -> None:
    required = {"resnet18", "resnet34", "resnet50", "vgg16", "densenet121", "efficientnet_b0"}
    assert required | {"mobilenet_v2"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_gets_a_num_classes_head_and_a_cam_layer(arch: str) -> None:
    # On the meta device: shapes only, no weight initialisation, so all of them stay fast.
    with torch.device("meta"):
        model = build_model(arch, 5).eval()
        out = model(torch.empty(2, 3, 64, 64))
    assert out.shape == (2, 5)
    weight, bias = head_parameters(model, arch)
    assert weight.shape[0] == 5 and bias.shape == (5,)
    layer = gradcam_target_layer(model, arch)
    assert layer is not model and any(layer is m for m in model.modules())
    prep = default_preprocessing(arch)
    assert prep.input_size >= 224
    assert prep.mean == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize("arch", MAIN_ARCHS)
def test_build_model_without_weights_outputs_num_classes_logits(
    arch: str, fresh_model: Callable[[str], nn.Module]
) -> None:
    model = fresh_model(arch).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3)
    head = model.get_submodule(HEAD[arch])
    assert isinstance(head, nn.Linear) and head.out_features == 3
    assert head_parameters(model, arch) == [head.weight, head.bias]


def test_build_model_rejects_a_non_positive_class_count() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet18", 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: build_model("resnet19", 2),
        lambda: default_preprocessing("resnet19"),
        lambda: gradcam_target_layer(nn.Linear(1, 1), "resnet19"),
    ],
)
def test_an_unknown_architecture_is_refused_with_the_supported_names(call: Callable) -> None:
    with pytest.raises(UnknownArchitecture) as info:
        call()
    assert isinstance(info.value, ValueError) and isinstance(info.value, MLError)
    message = str(info.value)
    assert "'resnet19'" in message
    for name in ("resnet18", "densenet121", "vgg16", "efficientnet_b0", "mobilenet_v2"):
        assert name in message


# --- ImageNet weights through torchvision's cache ----------------------------------------------


def test_imagenet_weights_that_cannot_be_downloaded_raise_a_message_naming_file_and_path(
    torch_home: Path, network_calls: list[str]
) -> None:
    filename = _imagenet_filename("resnet18")
    expected = torch_home / "hub" / "checkpoints" / filename

    with pytest.raises(MissingPretrainedWeights) as info:
        build_model("resnet18", 2, weights="imagenet")

    assert network_calls and network_calls[0].endswith(filename)  # the real download was tried
    message = str(info.value)
    assert filename in message and str(expected) in message
    assert "copy" in message and "local" in message
    assert isinstance(info.value, FileNotFoundError) and info.value.path == str(expected)
    assert not expected.exists()


def test_imagenet_weights_already_in_the_cache_load_without_the_network(
    torch_home: Path, network_calls: list[str]
) -> None:
    source = get_model("resnet18", weights=None)  # stands in for the ImageNet file
    cached = torch_home / "hub" / "checkpoints" / _imagenet_filename("resnet18")
    cached.parent.mkdir(parents=True)
    torch.save(source.state_dict(), cached)

    model = build_model("resnet18", 2, weights="imagenet")

    assert network_calls == []
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert model.fc.out_features == 2


# --- local backbone files ----------------------------------------------------------------------


def test_a_features_only_backbone_file_loads_and_reports_the_missing_classifier(
    tmp_path: Path,
) -> None:
    # Like shared/weights/mobilenet_v2-imagenet-features.pth: torchvision key names, no classifier.
    features = {
        k: v
        for k, v in get_model("mobilenet_v2", weights=None).state_dict().items()
        if not k.startswith("classifier.")
    }
    path = tmp_path / "mobilenet_v2-features.pth"
    torch.save(features, path)

    model = build_model("mobilenet_v2", 3, weights=path)

    report = model.backbone_load_report
    assert sorted(report.missing_keys) == ["classifier.1.bias", "classifier.1.weight"]
    assert report.unexpected_keys == [] and report.dropped_keys == []
    assert len(report.loaded_keys) == len(features)
    assert "classifier.1.weight" in report.summary()
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in features.items())
    assert model.classifier[1].out_features == 3


def test_a_backbone_with_another_head_size_drops_that_head_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    finetuned = get_model("resnet18", weights=None, num_classes=3)
    path = tmp_path / "finetuned.pt"
    # Wrapped and DataParallel-prefixed, as many training scripts save it.
    torch.save({"state_dict": {f"module.{k}": v for k, v in finetuned.state_dict().items()}}, path)

    model = build_model("resnet18", 5, weights=path)

    report = model.backbone_load_report
    assert sorted(report.dropped_keys) == ["fc.bias", "fc.weight"]
    assert sorted(report.missing_keys) == ["fc.bias", "fc.weight"]
    assert torch.equal(model.layer3[0].conv1.weight, finetuned.layer3[0].conv1.weight)
    assert model.fc.out_features == 5


def test_a_backbone_file_for_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pt"
    torch.save(get_model("resnet18", weights=None).state_dict(), path)

    with pytest.raises(IncompatibleWeights, match="another architecture") as info:
        build_model("mobilenet_v2", 2, weights=path)
    assert "conv1.weight" in str(info.value)


def test_a_missing_backbone_file_raises_missing_pretrained_weights_naming_the_path(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nowhere" / "backbone.pth"
    with pytest.raises(MissingPretrainedWeights) as info:
        load_backbone_weights(get_model("mobilenet_v2", weights=None), path)
    assert str(path) in str(info.value)


# --- Grad-CAM support --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("resnet18", lambda m: m.layer4[-1]),
        ("vgg16", lambda m: m.features[29]),
        ("densenet121", lambda m: m.features.norm5),
        ("mobilenet_v2", lambda m: m.features[-1]),
        ("efficientnet_b0", lambda m: m.features[-1]),
    ],
)
def test_the_gradcam_layer_is_the_last_feature_map(
    arch: str, expected: Callable[[nn.Module], nn.Module], fresh_model: Callable[[str], nn.Module]
) -> None:
    model = fresh_model(arch)
    assert gradcam_target_layer(model, arch) is expected(model)


@pytest.mark.parametrize("arch", MAIN_ARCHS)
def test_prepare_for_cam_removes_inplace_ops_without_changing_outputs(
    arch: str, fresh_model: Callable[[str], nn.Module]
) -> None:
    model = fresh_model(arch).eval()
    assert any(getattr(m, "inplace", False) is True for m in model.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    keys = list(model.state_dict())

    prepared = prepare_for_cam(model)

    assert prepared is model
    assert not any(getattr(m, "inplace", False) is True for m in model.modules())
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-6)
    assert list(model.state_dict()) == keys


def test_prepare_for_cam_replaces_densenets_inplace_final_relu(
    fresh_model: Callable[[str], nn.Module],
) -> None:
    model = prepare_for_cam(fresh_model("densenet121")).eval()
    seen: list[torch.Tensor] = []
    # Keep the very tensor norm5 returns; torchvision's forward would ReLU it in place.
    model.features.norm5.register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert seen[0].min() < 0  # still the pre-ReLU values: nothing overwrote the hooked output
