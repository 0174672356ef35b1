from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.training.ml.imagefolders import make_folder
from training.ml.models.checkpoint import load_weights_file
from training.ml.preprocessing import Preprocessing
from training.ml.train.config import TrainConfig
from training.ml.train.fit import fit
from training.ml.train.pipeline import run_batches
from training.ml.train.scan import scan_image_folder
from training.ml.train.splits import stratified_split

SIZE = 32
PREP = Preprocessing(input_size=SIZE)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, dict]:
    root = make_folder(tmp_path_factory.mktemp("cxr") / "ds", per_class=10)
    samples = scan_image_folder(root).samples
    split = stratified_split([label for _, label in samples], val_fraction=0.2, test_fraction=0.2)
    return root, samples, split


# Two short full fine-tunes of mobilenet_v2 on 32 px images, without early stopping.
BASE = dict(arch="mobilenet_v2", strategy="full", epochs=2, batch_size=4, input_size=SIZE)


def _config(**changes: Any) -> TrainConfig:
    return TrainConfig(
        **{**BASE, "lr": 1e-3, "device": "cpu", "early_stopping_patience": None, **changes}
    )


def _epoch(batches) -> tuple[list[torch.Tensor], list[int]]:
    inputs, labels = [], []
    for x, y in batches:
        inputs.append(x)
        labels += y.tolist()
    return inputs, labels


def test_a_training_epoch_takes_every_train_image_once_in_a_new_order_each_epoch(folder) -> None:
    root, samples, split = folder
    batches = run_batches(_config(), root, samples, split, PREP, CPU)

    first, first_labels = _epoch(batches.train)
    second, second_labels = _epoch(batches.train)

    train_labels = [samples[i][1] for i in split["train"]]
    assert len(batches.train) == len(train_labels) // 4 == len(first)
    assert Counter(first_labels) == Counter(second_labels) == Counter(train_labels)
    assert first[0].shape == (4, 3, SIZE, SIZE)
    assert not torch.equal(torch.cat(first), torch.cat(second))
    # Decoded in the first epoch only: the cache holds the three splits' images, no more.
    assert batches.images.decoded == len(split["train"])
    assert len(batches.images) == len(samples)


def test_evaluation_batches_are_the_split_in_order_without_augmentation(folder) -> None:
    root, samples, split = folder
    batches = run_batches(_config(hflip=True), root, samples, split, PREP, CPU)

    once, labels = _epoch(batches.val)
    again, _ = _epoch(batches.val)

    assert labels == [samples[i][1] for i in split["val"]]
    assert torch.equal(torch.cat(once), torch.cat(again))
    assert batches.test is not None and _epoch(batches.test)[1] == [
        samples[i][1] for i in split["test"]
    ]


def test_the_weighted_sampler_draws_both_classes_about_equally(folder) -> None:
    root, samples, split = folder
    left = [i for i in split["train"] if samples[i][1] == 0]
    right = [i for i in split["train"] if samples[i][1] == 1]
    lopsided = {**split, "train": left + right[:2]}  # 3:1
    config = _config(imbalance="sampler", batch_size=2)
    batches = run_batches(config, root, samples, lopsided, PREP, CPU)

    labels = [label for _ in range(20) for label in _epoch(batches.train)[1]]

    share = sum(labels) / len(labels)
    assert 0.35 < share < 0.65


def test_fit_on_the_cpu_gives_the_same_weights_twice_for_a_seed(folder, tmp_path: Path) -> None:
    root, samples, split = folder
    classes = ["left", "right"]
    config = _config(augment="cxr", hflip=True, imbalance="sampler", max_steps_per_epoch=2)

    def run(seed: int, name: str) -> tuple[list[dict], dict[str, torch.Tensor]]:
        result = fit(
            TrainConfig.from_dict({**config.to_dict(), "seed": seed}),
            root,
            samples,
            split,
            classes=classes,
            checkpoint_path=tmp_path / name,
        )
        state, _ = load_weights_file(result.checkpoint_path)
        history = [
            {k: v for k, v in row.items() if "seconds" not in k and "per_s" not in k}
            for row in result.history
        ]
        return history, state

    history, state = run(3, "a.pt")
    again_history, again_state = run(3, "b.pt")
    other_history, _ = run(4, "c.pt")

    assert history == again_history
    assert state.keys() == again_state.keys()
    assert all(torch.equal(state[key], again_state[key]) for key in state)
    assert other_history != history


def test_a_run_over_the_memory_limit_trains_from_a_mapped_file(folder, tmp_path: Path) -> None:
    root, samples, split = folder
    spill = tmp_path / "spill"
    config = _config(epochs=1, cache_memory_mb=0, cache_dir=str(spill), max_steps_per_epoch=1)

    result = fit(config, root, samples, split, classes=["l", "r"], checkpoint_path=tmp_path / "m")

    assert result.history[0]["train_images"] == 4
    assert result.test_metrics is not None and spill.is_dir() and list(spill.iterdir()) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"cache_memory_mb": -1}, "cache_memory_mb"), ({"cache_dir": ""}, "cache_dir")],
)
def test_impossible_cache_settings_are_refused(changes: dict, message: str) -> None:
    from training.ml.train.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        TrainConfig(arch="resnet18", **changes)
