from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.ml.imagefolders import make_folder
from training.ml.preprocessing import Preprocessing, reading_long_side
from training.ml.train.cache import DecodedImages
from training.ml.train.dataset import load_image
from training.ml.train.scan import DatasetError, scan_image_folder
from training.ml.train.transforms import GrayscaleResize


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, list[tuple[str, int]]]:
    root = make_folder(tmp_path / "ds", per_class=4, size=24)
    return root, scan_image_folder(root).samples


def _float_pixels(root: Path, rel: str, prep: Preprocessing) -> np.ndarray:
    image = load_image(root / rel, read_long_side=reading_long_side(prep))
    return GrayscaleResize(prep.input_size)(image)


def test_each_image_is_decoded_once_and_later_batches_never_read_the_files(folder) -> None:
    root, samples = folder
    cache = DecodedImages(root, samples, range(len(samples)), Preprocessing(input_size=24))

    first = cache.batch([0, 3, 5])
    assert cache.decoded == 3
    for rel, _ in samples:
        (root / rel).unlink()  # from now on only the cache can answer

    assert torch.equal(cache.batch([5, 0, 3]), first[[2, 0, 1]])
    with pytest.raises(DatasetError, match="Cannot read"):
        cache.batch([1])


def test_cached_pixels_are_the_models_input_size_within_half_a_grey_level(folder) -> None:
    root, samples = folder
    prep = Preprocessing(input_size=40)  # the 24 px images are resized as inference resizes
    cache = DecodedImages(root, samples, [0, 1, 6], prep)

    batch = cache.batch([0, 1, 6])

    assert batch.shape == (3, 40, 40) and batch.dtype == torch.uint8
    for row, index in enumerate([0, 1, 6]):
        exact = _float_pixels(root, samples[index][0], prep)
        assert np.abs(batch[row].numpy() / 255.0 - exact).max() <= 0.5 / 255 + 1e-6


def test_an_8_bit_image_already_at_the_input_size_is_kept_exactly(folder) -> None:
    root, samples = folder
    prep = Preprocessing(input_size=24)

    batch = DecodedImages(root, samples, [2], prep).batch([2])

    image = load_image(root / samples[2][0], read_long_side=reading_long_side(prep))
    assert np.array_equal(batch[0].numpy(), np.asarray(image))


def test_a_cache_over_the_memory_limit_is_a_mapped_file_that_is_already_unlinked(
    folder, tmp_path: Path
) -> None:
    root, samples = folder
    prep = Preprocessing(input_size=32)
    spill = tmp_path / "spill"
    everything = range(len(samples))

    on_disk = DecodedImages(root, samples, everything, prep, max_memory_bytes=0, cache_dir=spill)
    in_memory = DecodedImages(root, samples, everything, prep)

    assert on_disk.on_disk and not in_memory.on_disk
    assert spill.is_dir() and list(spill.iterdir()) == []  # nothing left behind, even if killed
    assert torch.equal(on_disk.batch(list(everything)), in_memory.batch(list(everything)))


def test_a_damaged_image_fails_with_a_dataset_error_naming_it(folder) -> None:
    root, samples = folder
    damaged = root / samples[1][0]
    damaged.write_bytes(damaged.read_bytes()[:40])
    cache = DecodedImages(root, samples, range(len(samples)), Preprocessing(input_size=24))

    with pytest.raises(DatasetError, match=damaged.name):
        cache.batch([0, 1, 2, 3])


def test_samples_outside_the_cache_or_the_dataset_are_refused(folder) -> None:
    root, samples = folder
    with pytest.raises(DatasetError, match="out of range"):
        DecodedImages(root, samples, [0, len(samples)], Preprocessing(input_size=24))

    cache = DecodedImages(root, samples, [0, 1], Preprocessing(input_size=24))
    with pytest.raises(DatasetError, match="not in this run's image cache"):
        cache.batch([2])
