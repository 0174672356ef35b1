"""A run's input pipeline: batches cut from the decoded-image cache, augmented on the device.

:class:`DeviceBatches` stands in for a DataLoader in :func:`training.ml.train.loop.train_one_epoch`
and :func:`~training.ml.train.loop.evaluate`: it yields ``(inputs, targets)`` already on the device.
The next batch's pixels are gathered (and, in the first epoch, decoded) by a helper thread while
the current step runs; shuffling, the weighted sampler and the augmentation parameters are drawn
in the calling thread from seeded generators, so a seed gives the same run every time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import BatchSampler, RandomSampler, Sampler, SequentialSampler

from ..preprocessing import Preprocessing
from .cache import DecodedImages
from .config import TrainConfig
from .dataset import weighted_sampler
from .gpu_augment import BatchAugment

__all__ = ["DeviceBatches", "RunBatches", "place_model", "run_batches"]

_MB = 1024 * 1024


class DeviceBatches:
    """``(inputs, targets)`` batches of sample ``indices`` on ``device``; ``len()`` is the number
    of batches. ``transform`` turns uint8 pixels into the model's input (see
    :class:`~training.ml.train.gpu_augment.BatchAugment`)."""

    def __init__(
        self,
        images: DecodedImages,
        samples: Sequence[tuple[str, int]],
        indices: Sequence[int],
        transform: BatchAugment,
        device: torch.device,
        *,
        batch_size: int,
        shuffle: bool = False,
        sampler: Sampler[int] | None = None,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if sampler is not None and shuffle:
            raise ValueError(
                "Pass either shuffle=True or a sampler, not both (the sampler decides)."
            )
        self.images = images
        self.indices = [int(i) for i in indices]
        self.labels = [int(samples[i][1]) for i in self.indices]
        self.transform = transform
        self.device = torch.device(device)
        if sampler is None:
            positions = range(len(self.indices))
            sampler = (
                RandomSampler(positions, generator=generator)
                if shuffle
                else SequentialSampler(positions)
            )
        self.batch_sampler = BatchSampler(sampler, batch_size, drop_last)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def _host_batch(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.images.batch(
            [self.indices[p] for p in positions], pin_memory=self.device.type == "cuda"
        )
        return pixels, torch.tensor([self.labels[p] for p in positions], dtype=torch.int64)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = iter(self.batch_sampler)

        def submit(pool: ThreadPoolExecutor) -> Future | None:
            positions = next(order, None)
            return None if positions is None else pool.submit(self._host_batch, positions)

        with ThreadPoolExecutor(1, thread_name_prefix="cxr-batches") as pool:
            pending = submit(pool)
            while pending is not None:
                pixels, targets = pending.result()
                pending = submit(pool)  # gathered (or decoded) while this batch trains
                inputs = self.transform(pixels.to(self.device, non_blocking=True))
                yield inputs, targets.to(self.device, non_blocking=True)


@dataclass
class RunBatches:
    """The batches of one run, all cut from one decoded-image cache."""

    images: DecodedImages
    train: DeviceBatches
    val: DeviceBatches
    test: DeviceBatches | None

    @property
    def train_labels(self) -> list[int]:
        return self.train.labels


def run_batches(
    config: TrainConfig,
    root: str | os.PathLike[str],
    samples: Sequence[tuple[str, int]],
    split: dict[str, list[int]],
    prep: Preprocessing,
    device: torch.device,
) -> RunBatches:
    """Train batches (shuffled or weighted-sampled, augmented) and val/test batches (plain, twice
    the batch size) over one cache of every image in ``split``."""
    images = DecodedImages(
        root,
        samples,
        [i for name in ("train", "val", "test") for i in split[name]],
        prep,
        threads=config.num_workers,
        max_memory_bytes=config.cache_memory_mb * _MB,
        cache_dir=config.cache_dir,
    )
    labels = [int(samples[i][1]) for i in split["train"]]
    sampler = None
    if config.imbalance == "sampler":
        sampler = weighted_sampler(labels, generator=torch.Generator().manual_seed(config.seed))
    augment = BatchAugment(
        prep,
        augment=config.augment,
        hflip=config.hflip,
        gamma=config.gamma,
        generator=torch.Generator().manual_seed(config.seed + 1),
    )
    train = DeviceBatches(
        images,
        samples,
        split["train"],
        augment,
        device,
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        # A last batch of one image breaks BatchNorm in train mode.
        drop_last=len(labels) > config.batch_size,
        generator=torch.Generator().manual_seed(config.seed),
    )
    plain = BatchAugment(prep, augment="none")

    def eval_batches(indices: list[int]) -> DeviceBatches:
        return DeviceBatches(
            images, samples, indices, plain, device, batch_size=config.batch_size * 2
        )

    test = eval_batches(split["test"]) if split["test"] else None
    return RunBatches(images=images, train=train, val=eval_batches(split["val"]), test=test)


def place_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` on ``device``; on CUDA in channels_last, the layout the batches come in, with
    cuDNN picking the fastest convolution for the (fixed) input size."""
    model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model.to(memory_format=torch.channels_last)
    return model
