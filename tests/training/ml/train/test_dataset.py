from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.ml.imagefolders import CLASSES, make_folder, square_image
from training.ml.preprocessing import Preprocessing, to_model_input
from training.ml.train.dataset import CXRDataset, class_weights, make_loader, weighted_sampler
from training.ml.train.scan import DatasetError, scan_image_folder
from training.ml.train.transforms import eval_transform


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_the_dataset_gives_model_tensors_and_labels_for_the_chosen_indices(
    messy_folder: Path,
) -> None:
    scan = scan_image_folder(messy_folder)
    prep = Preprocessing(input_size=32)
    dicom = [path for path, _ in scan.samples].index("right/scan.dcm")
    dataset = CXRDataset(messy_folder, scan.samples, [0, dicom], eval_transform(prep))

    tensor, label = dataset[1]

    assert len(dataset) == 2 and dataset.labels == [0, 1]
    assert label == 1 and tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32
    image = dataset.image(1)
    assert image.mode == "L"
    assert torch.equal(tensor, to_model_input(image, prep))


def test_the_lru_cache_keeps_at_most_cache_size_decoded_images(tmp_path: Path) -> None:
    root = make_folder(tmp_path, per_class=3)
    scan = scan_image_folder(root)
    dataset = CXRDataset(root, scan.samples, cache_size=2)

    first = dataset.image(0)
    assert dataset.image(0) is first  # served from the cache
    dataset.image(1)
    dataset.image(2)

    assert len(dataset._cache) == 2
    assert dataset.image(0) is not first  # evicted, decoded again
    assert CXRDataset(root, scan.samples).image(0) is not CXRDataset(root, scan.samples).image(0)


def test_out_of_range_indices_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="out of range"):
        CXRDataset(tmp_path, [("a.png", 0)], [0, 3])


def test_the_loader_batches_and_shuffles_reproducibly(tmp_path: Path) -> None:
    root = make_folder(tmp_path, per_class=5)
    scan = scan_image_folder(root)
    dataset = CXRDataset(root, scan.samples, transform=eval_transform(Preprocessing(input_size=16)))

    def order(seed: int) -> list[int]:
        loader = make_loader(dataset, batch_size=4, shuffle=True, seed=seed)
        return [int(y) for _, labels in loader for y in labels]

    loader = make_loader(dataset, batch_size=4)
    inputs, labels = next(iter(loader))
    assert inputs.shape == (4, 3, 16, 16) and labels.tolist() == [0, 0, 0, 0]
    assert loader.pin_memory is torch.cuda.is_available()
    assert order(1) == order(1)
    assert sorted(order(1)) == sorted(scan.labels)
    with pytest.raises(ValueError, match="shuffle=True or a sampler"):
        make_loader(dataset, batch_size=2, shuffle=True, sampler=weighted_sampler(scan.labels))


def test_class_weights_are_inverse_frequency_with_mean_one_per_image() -> None:
    labels = [0, 0, 0, 1]

    weights = class_weights(labels, 3)

    assert torch.allclose(weights, torch.tensor([4 / 6, 4 / 2, 1.0]))
    per_image = weights[torch.tensor(labels)]
    assert per_image.mean().item() == pytest.approx(1.0)


def test_the_weighted_sampler_draws_classes_equally_often() -> None:
    labels = [0] * 90 + [1] * 10
    generator = torch.Generator().manual_seed(0)

    drawn = list(weighted_sampler(labels, num_samples=4000, generator=generator))

    share = sum(labels[i] for i in drawn) / len(drawn)
    assert 0.45 < share < 0.55
    assert len(list(weighted_sampler(labels))) == 100


def test_square_images_differ_by_class() -> None:
    left = np.asarray(square_image(0), dtype=float)
    right = np.asarray(square_image(1), dtype=float)
    assert left[:8, :8].mean() > right[:8, :8].mean() + 100
    assert CLASSES == ["left", "right"]
