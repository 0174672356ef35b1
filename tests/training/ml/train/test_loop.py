from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.training.ml.samples import tensor_loader
from training.ml.models.architectures import build_model
from training.ml.train.loop import evaluate, train_one_epoch
from training.ml.train.strategy import apply_strategy


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_should_stop_stops_within_a_step() -> None:
    model = build_model("mobilenet_v2", 2)
    report = apply_strategy(model, "mobilenet_v2", "head")
    optimizer = torch.optim.AdamW(report.param_groups[0]["params"], lr=1e-3)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    out = train_one_epoch(
        model, tensor_loader(), optimizer, nn.CrossEntropyLoss(), "cpu", should_stop=stop
    )

    assert out["cancelled"] is True
    assert out["steps"] == 2 and out["images"] == 16


def test_evaluate_returns_logits_labels_and_the_loss_at_a_temperature() -> None:
    model = build_model("resnet18", 2)
    loader = tensor_loader(n=10, batch_size=4)

    plain = evaluate(model, loader, "cpu")
    warm = evaluate(model, loader, "cpu", temperature=3.0)

    assert plain.logits.shape == (10, 2) and plain.labels.tolist() == [0, 1] * 5
    expected = nn.functional.cross_entropy(
        torch.from_numpy(plain.logits), torch.from_numpy(plain.labels)
    )
    assert plain.loss == pytest.approx(expected.item())
    assert np.allclose(warm.logits, plain.logits)
    assert warm.loss != pytest.approx(plain.loss)
    assert not model.training
