from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.training.ml.samples import tensor_loader
from training.ml.models.architectures import build_model, head_name
from training.ml.train.config import ConfigError
from training.ml.train.loop import train_one_epoch
from training.ml.train.strategy import apply_strategy, backbone_blocks, train_mode


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], model: nn.Module) -> set[str]:
    after = model.state_dict()
    return {key for key, value in before.items() if not torch.equal(value, after[key])}


def _train_steps(model: nn.Module, arch: str, strategy: str, steps: int = 2) -> set[str]:
    report = apply_strategy(model, arch, strategy, unfreeze_blocks=2)
    before = _snapshot(model)
    optimizer = torch.optim.AdamW(
        [p for group in report.param_groups for p in group["params"]], lr=1e-2
    )
    train_one_epoch(
        model, tensor_loader(), optimizer, nn.CrossEntropyLoss(), "cpu", max_steps=steps
    )
    return _changed(before, model)


def test_head_training_changes_only_the_head_and_leaves_batchnorm_statistics_alone() -> None:
    model = build_model("mobilenet_v2", 2)

    changed = _train_steps(model, "mobilenet_v2", "head")

    head = head_name("mobilenet_v2")
    assert changed == {f"{head}.weight", f"{head}.bias"}


def test_frozen_batchnorm_layers_stay_in_eval_mode_while_training() -> None:
    model = build_model("resnet18", 2)
    apply_strategy(model, "resnet18", "partial", unfreeze_blocks=1)

    train_mode(model)

    assert not model.bn1.training and not model.layer3[0].bn1.training
    assert model.layer4[0].bn1.training and model.fc.training


def test_partial_training_changes_the_last_blocks_but_not_the_first_conv() -> None:
    model = build_model("mobilenet_v2", 2)

    changed = _train_steps(model, "mobilenet_v2", "partial")

    assert "features.0.0.weight" not in changed
    assert "features.0.1.running_mean" not in changed  # a frozen BN keeps its statistics
    assert "features.18.0.weight" in changed and "features.17.conv.0.0.weight" in changed
    assert "features.18.1.running_mean" in changed  # a trained BN updates its statistics
    assert not any(key.startswith("features.16.") for key in changed)
    assert "classifier.1.weight" in changed


def test_full_training_changes_the_first_conv() -> None:
    model = build_model("resnet18", 2)

    changed = _train_steps(model, "resnet18", "full")

    assert {"conv1.weight", "bn1.running_mean", "layer4.1.conv2.weight", "fc.weight"} <= changed


@pytest.mark.parametrize(
    ("arch", "last_block", "first_block"),
    [
        ("resnet18", "layer4", "stem"),
        ("densenet121", "denseblock4", "stem"),
        ("vgg16", "classifier", "conv1"),
        ("efficientnet_b0", "features.8", "features.0"),
        ("mobilenet_v3_small", "classifier", "features.0"),
    ],
)
def test_blocks_and_head_hold_every_parameter_exactly_once(
    arch: str, last_block: str, first_block: str
) -> None:
    with torch.device("meta"):  # shapes only: no time spent initialising VGG's 138M weights
        model = build_model(arch, 3)
    blocks = backbone_blocks(model, arch)

    assert blocks[-1][0] == last_block and blocks[0][0] == first_block
    owner: dict[int, str] = {}
    for name, paths in [*blocks, ("head", [head_name(arch)])]:
        for path in paths:
            for parameter in model.get_submodule(path).parameters():
                assert id(parameter) not in owner, (name, owner.get(id(parameter)))
                owner[id(parameter)] = name
    assert len(owner) == len(list(model.parameters()))

    head = apply_strategy(model, arch, "head")
    partial = apply_strategy(model, arch, "partial", unfreeze_blocks=1)
    full = apply_strategy(model, arch, "full")
    assert head.trainable_blocks == [] and partial.trainable_blocks == [last_block]
    assert head.trainable_params < partial.trainable_params < full.trainable_params
    assert full.trainable_params == full.total_params
    assert "trainable" in partial.summary()


def test_apply_strategy_reports_parameter_groups() -> None:
    model = build_model("resnet18", 2)

    report = apply_strategy(model, "resnet18", "partial", unfreeze_blocks=1)

    names = [group["name"] for group in report.param_groups]
    assert names == ["head", "backbone"]
    trainable = sum(p.numel() for g in report.param_groups for p in g["params"])
    assert trainable == report.trainable_params
    assert all(p.requires_grad for p in model.layer4.parameters())
    assert not any(p.requires_grad for p in model.layer3.parameters())
    with pytest.raises(ConfigError):
        apply_strategy(copy.deepcopy(model), "resnet18", "most")
