from __future__ import annotations

import json

import pytest

from training.ml.train.config import DEFAULT_LR, ConfigError, TrainConfig


def test_the_config_round_trips_through_json_and_picks_the_strategy_learning_rate() -> None:
    config = TrainConfig(arch="densenet121", strategy="partial", weights="/w/backbone.pth")

    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))

    assert again == config
    assert config.learning_rate == DEFAULT_LR["partial"] == 3e-4
    assert TrainConfig(arch="resnet18", strategy="full").learning_rate == 1e-4
    assert TrainConfig(arch="resnet18", lr=0.05).learning_rate == 0.05
    assert config.preprocessing().input_size == 224
    assert TrainConfig(arch="resnet18", input_size=64).preprocessing().input_size == 64


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"arch": "alexnet"}, "Unknown architecture"),
        ({"strategy": "everything"}, "Unknown strategy"),
        ({"imbalance": "oversample"}, "imbalance"),
        ({"warmup_head_epochs": 1}, "only applies to strategy 'full'"),
        ({"strategy": "full", "epochs": 2, "warmup_head_epochs": 2}, "fewer than epochs"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"input_size": 8}, "input_size"),
        ({"max_steps_per_epoch": 0}, "max_steps_per_epoch"),
        ({"lr_schedule": "linear"}, "Unknown learning-rate schedule"),
        ({"lr_warmup_epochs": -1}, "lr_warmup_epochs must be a number >= 0"),
        ({"lr_schedule": "cosine_epoch", "lr_warmup_epochs": 1}, "needs lr_schedule"),
        ({"gamma": 1.5}, "gamma must be a number from 0"),
        ({"gamma": True}, "gamma must be a number from 0"),
        ({"tta": "yes"}, "tta must be true or false"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_impossible_configs_are_refused_with_a_reason(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{"arch": "resnet18", **changes})


def test_unknown_config_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"arch": "resnet18", "learning_rate": 0.1})


def test_the_default_recipe_is_the_one_that_transfers() -> None:
    """Issue #23 item 4; the measurement is in bench/RESULTS.md ("training recipe")."""
    config = TrainConfig(arch="mobilenet_v2")

    assert config.label_smoothing == 0.1
    assert config.gamma == 0.25 and config.augment == "cxr" and not config.hflip
    assert config.lr_schedule == "cosine_step" and config.lr_warmup_epochs == 1.0
    assert config.tta is False  # 4x the evaluation cost: opt-in
    old = TrainConfig(
        arch="mobilenet_v2",
        label_smoothing=0.0,
        gamma=0.0,
        lr_schedule="cosine_epoch",
        lr_warmup_epochs=0,
    )
    assert TrainConfig.from_dict(old.to_dict()) == old
