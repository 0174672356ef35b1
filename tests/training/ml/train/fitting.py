"""What the fit tests share: a small input size and a CPU training config."""

from __future__ import annotations

from typing import Any

from training.ml.train.config import TrainConfig

SIZE = 32  # input size: small enough for CPU, large enough for 5 stride-2 stages


def fit_config(**changes: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "arch": "resnet18",
        "strategy": "full",
        "epochs": 1,
        "batch_size": 6,
        "input_size": SIZE,
        "augment": "none",
        "lr": 1e-3,
        "device": "cpu",
    }
    values.update(changes)
    return TrainConfig(**values)
