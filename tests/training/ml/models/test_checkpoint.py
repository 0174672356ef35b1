from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import get_model

from training.ml.errors import MLError
from training.ml.models.architectures import build_model
from training.ml.models.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointMeta,
    CheckpointNotFound,
    build_for_inference,
    file_sha256,
    load_weights_file,
    save_checkpoint,
)
from training.ml.models.weights import IncompatibleWeights, InvalidWeightsFile
from training.ml.preprocessing import Preprocessing

CLASSES = ["normal", "pneumonia", "covid"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet18", len(CLASSES)).eval()


def _meta(**changes: object) -> CheckpointMeta:
    values: dict = {
        "arch": "resnet18",
        "classes": list(CLASSES),
        "preprocessing": Preprocessing(input_size=64),
        "temperature": 1.5,
        "thresholds": {"covid": 0.3},
        "extra": {"epochs": 3, "val_auc": 0.91},
    }
    values.update(changes)
    return CheckpointMeta(**values)


def test_a_checkpoint_round_trips_weights_and_meta_and_returns_the_files_sha256(
    tmp_path: Path, model: torch.nn.Module
) -> None:
    path = tmp_path / "versions" / "v1.pt"

    digest = save_checkpoint(path, model, _meta())

    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)
    raw = torch.load(path, weights_only=True, map_location="cpu")  # loadable with no help from us
    assert raw["format"] == CHECKPOINT_FORMAT
    assert list(tmp_path.joinpath("versions").iterdir()) == [path]  # no temp file left behind

    state_dict, meta = load_weights_file(path)
    assert meta == _meta()
    assert state_dict.keys() == model.state_dict().keys()
    assert all(torch.equal(state_dict[k], v) for k, v in model.state_dict().items())

    rebuilt = build_for_inference("resnet18", CLASSES, state_dict)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model(x))
    assert not rebuilt.training


def test_checkpoint_meta_survives_a_plain_dict_round_trip() -> None:
    meta = _meta(thresholds=None)
    assert CheckpointMeta.from_dict(meta.to_dict()) == meta


def test_a_plain_state_dict_loads_with_no_meta_and_without_the_dataparallel_prefix(
    tmp_path: Path, model: torch.nn.Module
) -> None:
    path = tmp_path / "plain.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)

    state_dict, meta = load_weights_file(path)

    assert meta is None
    assert set(state_dict) == set(model.state_dict())
    build_for_inference("resnet18", CLASSES, state_dict)


def test_a_wrong_class_count_raises_incompatible_weights_naming_both_numbers(
    model: torch.nn.Module,
) -> None:
    with pytest.raises(IncompatibleWeights) as info:
        build_for_inference("resnet18", [*CLASSES, "tuberculosis"], model.state_dict())
    message = str(info.value)
    assert "3 outputs" in message and "4 classes" in message and "fc.weight" in message


def test_weights_of_another_architecture_name_the_missing_and_unexpected_keys(
    model: torch.nn.Module,
) -> None:
    with pytest.raises(IncompatibleWeights) as info:
        build_for_inference("mobilenet_v2", CLASSES, model.state_dict())
    message = str(info.value)
    assert "missing keys" in message and "features.0.0.weight" in message
    assert "unexpected keys" in message and "conv1.weight" in message
    assert "another architecture" in message


@pytest.mark.parametrize(
    "content",
    [b"", b"just some text, not a checkpoint\n", b"\x89PNG\r\n\x1a\n" + bytes(range(256))],
    ids=["empty", "text", "png-ish"],
)
def test_a_file_that_is_not_a_torch_file_raises_an_ml_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(MLError, match="not a PyTorch weights file"):
        load_weights_file(path)


def test_a_whole_pickled_model_is_refused_with_how_to_resave_it(tmp_path: Path) -> None:
    path = tmp_path / "whole-model.pt"
    torch.save(get_model("mobilenet_v2", weights=None), path)
    with pytest.raises(InvalidWeightsFile, match=r"state_dict\(\)"):
        load_weights_file(path)


def test_a_torch_file_without_tensors_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "numbers.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(InvalidWeightsFile, match="not a state dict"):
        load_weights_file(path)


def test_a_checkpoint_from_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.pt"
    torch.save({"format": "cxr-checkpoint/2", "state_dict": {}, "meta": {}}, path)
    with pytest.raises(InvalidWeightsFile, match="cxr-checkpoint/2"):
        load_weights_file(path)


def test_a_missing_weights_file_raises_checkpoint_not_found(tmp_path: Path) -> None:
    path = tmp_path / "gone.pt"
    with pytest.raises(CheckpointNotFound) as info:
        load_weights_file(path)
    assert isinstance(info.value, FileNotFoundError) and str(path) in str(info.value)


def test_saving_meta_that_is_not_json_fails_before_writing(
    tmp_path: Path, model: torch.nn.Module
) -> None:
    path = tmp_path / "v.pt"
    with pytest.raises(MLError, match="JSON"):
        save_checkpoint(path, model, _meta(extra={"val_auc": np.float32(0.9)}))
    assert not path.exists()


def test_saving_with_classes_that_do_not_match_the_head_fails_before_writing(
    tmp_path: Path, model: torch.nn.Module
) -> None:
    path = tmp_path / "v.pt"
    with pytest.raises(IncompatibleWeights, match="3 outputs"):
        save_checkpoint(path, model.state_dict(), _meta(classes=["a", "b"]))
    assert not path.exists()
