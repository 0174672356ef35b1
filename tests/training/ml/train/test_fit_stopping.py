"""fit stopping early: cancelled before or during an epoch, and by early stopping."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.ml.train.fitting import fit_config as _config
from training.ml.train.fit import fit


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_fit_cancelled_before_an_epoch_finishes_writes_no_checkpoint(folder, tmp_path) -> None:
    root, scan, split = folder
    path = tmp_path / "model.pt"

    result = fit(
        _config(arch="mobilenet_v2", epochs=3),
        root,
        scan,
        split,
        checkpoint_path=path,
        should_stop=lambda: True,
    )

    assert result.cancelled and result.checkpoint_path is None and result.sha256 is None
    assert result.history == [] and result.best_epoch is None
    assert not path.exists()


def test_fit_cancelled_in_a_later_epoch_keeps_the_best_checkpoint_so_far(folder, tmp_path) -> None:
    root, scan, split = folder
    steps = []

    def stop_in_epoch_two(event: dict) -> None:
        steps.append(event)

    def should_stop() -> bool:
        return any(e["phase"] == "train" and e["epoch"] == 2 for e in steps)

    result = fit(
        _config(arch="mobilenet_v2", epochs=4),
        root,
        scan,
        split,
        checkpoint_path=tmp_path / "model.pt",
        progress_callback=stop_in_epoch_two,
        should_stop=should_stop,
        progress_interval_s=0.0,
    )

    assert result.cancelled
    assert len(result.history) == 1 and result.best_epoch == 1
    assert result.checkpoint_path is not None and Path(result.checkpoint_path).is_file()
    assert result.test_metrics is None  # a cancelled run is not tested
    assert sum(1 for e in steps if e["phase"] == "train" and e["epoch"] == 2) == 1


def test_early_stopping_stops_when_the_validation_loss_stops_improving(folder, tmp_path) -> None:
    root, scan, split = folder
    # A learning rate this small cannot move the validation loss by the minimum improvement.
    config = _config(
        arch="mobilenet_v2",
        strategy="head",
        lr=1e-9,
        epochs=10,
        early_stopping_patience=2,
        max_steps_per_epoch=1,
    )

    result = fit(config, root, scan, split, checkpoint_path=tmp_path / "model.pt")

    assert result.stopped_early and not result.cancelled
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.best_epoch == 1
    assert result.trainable_params < result.total_params
