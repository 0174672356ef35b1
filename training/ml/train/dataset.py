"""Loading training images as tensors: one image decoded like an upload, the dataset and its
loader, and class weights or a weighted sampler against class imbalance."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler

from training.ml.imaging import UploadRejected, decode_upload

from .scan import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DatasetError, dataset_file

__all__ = ["CXRDataset", "class_weights", "load_image", "make_loader", "weighted_sampler"]


def load_image(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    read_long_side: int | None = None,
) -> Image.Image:
    """Decode one PNG/JPEG/DICOM file the way uploads are decoded: an 8-bit "L" image.

    ``read_long_side``: read as the workers read an upload for a model, reduced to no less than
    that on its long side (see :func:`training.ml.imaging.decode_upload`); None: every pixel.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError(
            f"Cannot read {path}: {exc.strerror or exc}. Was the dataset folder moved or changed "
            f"since it was scanned? Rescan it."
        ) from exc
    try:
        return decode_upload(
            data, max_bytes=max_bytes, max_pixels=max_pixels, read_long_side=read_long_side
        ).image
    except UploadRejected as exc:
        raise DatasetError(
            f"{path} cannot be used: {exc} Rescan the dataset with verification on, which lists "
            f"such files as unreadable and leaves them out."
        ) from exc


class CXRDataset(Dataset):
    """``(transform(image), label)`` for the samples at ``indices`` (all samples when None).

    Images are decoded with :mod:`training.ml.imaging` (so DICOM works) as mode "L". ``transform``
    maps that PIL image to a tensor (see :mod:`training.ml.train.transforms`); without one the PIL image
    itself is returned. ``cache_size`` decoded images are kept in an LRU cache (per process: each
    DataLoader worker has its own), which pays off when decoding is slow (DICOM, large PNGs).
    ``read_long_side``: see :func:`load_image` (training passes the model's, as the workers read).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        samples: Sequence[tuple[str, int]],
        indices: Sequence[int] | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        cache_size: int = 0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        read_long_side: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.samples = [(str(rel), int(label)) for rel, label in samples]
        self.indices = list(range(len(self.samples))) if indices is None else list(indices)
        bad = [i for i in self.indices if not 0 <= i < len(self.samples)]
        if bad:
            raise DatasetError(
                f"Sample indices {bad[:5]} are out of range for {len(self.samples)} samples."
            )
        self.transform = transform
        self.cache_size = int(cache_size)
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.read_long_side = read_long_side
        self._cache: OrderedDict[int, Image.Image] = OrderedDict()

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> list[int]:
        """Labels of this dataset's items, in item order."""
        return [self.samples[i][1] for i in self.indices]

    def image(self, item: int) -> Image.Image:
        """The decoded "L" image of item ``item`` (not of sample ``item``)."""
        index = self.indices[item]
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        image = load_image(
            dataset_file(self.root, self.samples[index][0]),
            max_bytes=self.max_bytes,
            max_pixels=self.max_pixels,
            read_long_side=self.read_long_side,
        )
        if self.cache_size > 0:
            self._cache[index] = image
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return image

    def __getitem__(self, item: int) -> tuple[Any, int]:
        image = self.image(item)
        label = self.samples[self.indices[item]][1]
        return (self.transform(image) if self.transform is not None else image), label


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool = False,
    sampler: Sampler[int] | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    seed: int | None = None,
) -> DataLoader:
    """A DataLoader with defaults for small CPU machines.

    ``num_workers=0`` decodes in the training process (no fork, no CUDA-in-fork trouble, and on 2
    cores the model needs both anyway). Memory is pinned only when CUDA is there. ``seed`` fixes
    the shuffling order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}.")
    if sampler is not None and shuffle:
        raise ValueError("Pass either shuffle=True or a sampler, not both (the sampler decides).")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        generator=generator,
    )


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights for ``CrossEntropyLoss(weight=...)``.

    ``n / (k * count_c)`` with ``k`` the number of classes present (scikit-learn's "balanced"):
    the average weight per training image is 1, so the loss keeps its scale. A class with no
    images gets weight 1 (it never occurs as a target, so its weight does not matter).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    if len(counts) > num_classes:
        raise ValueError(f"labels hold class indices >= num_classes ({num_classes}).")
    n = counts.sum()
    weights = np.ones(num_classes, dtype=np.float64)
    present = counts > 0
    weights[present] = n / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def weighted_sampler(
    labels: Sequence[int],
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> WeightedRandomSampler:
    """Sample each class equally often on average (with replacement), one epoch = len(labels)."""
    if not len(labels):
        raise ValueError("weighted_sampler needs at least one label.")
    array = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(array)
    weights = 1.0 / counts[array]
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double),  # type: ignore[arg-type]  # takes a tensor
        num_samples=len(labels) if num_samples is None else num_samples,
        replacement=True,
        generator=generator,
    )
