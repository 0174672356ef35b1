"""The decoded-image cache of a training run: every image decoded once, kept as uint8 pixels.

A run reads each image of its splits once (the first time a batch needs it, so the first epoch
pays for decoding and the later ones only copy pixels), through the same steps as before: decoded
like an upload (:func:`training.ml.train.dataset.load_image`, at the model's reading size), grayscale in
[0, 1], squash-resized to the model's input size exactly as inference resizes
(:class:`training.ml.train.transforms.GrayscaleResize`), then rounded to 8 bits. The rounding moves a
pixel by at most half a grey level; an 8-bit image already at the input size is kept exactly.

The pixels live in memory up to ``max_memory_bytes``; a larger run maps a file under
``cache_dir`` instead (100,000 images at 224 px are ~5 GB), unlinked as soon as it is mapped, so
nothing is left behind even when the process is killed. Images are decoded by a thread pool:
Pillow, numpy and torch release the GIL while they work.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..preprocessing import Preprocessing, reading_long_side
from .dataset import load_image
from .scan import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DatasetError, dataset_file
from .transforms import GrayscaleResize

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CACHE_MEMORY_MB", "DecodedImages", "decode_threads"]

#: Up to this size a run's decoded pixels stay in memory; beyond it they are memory-mapped.
DEFAULT_CACHE_MEMORY_MB = 4096


def decode_threads(requested: int = 0) -> int:
    """``requested`` threads, or one per core (at most 16) when it is 0."""
    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(16, cores or 1))


class DecodedImages:
    """uint8 ``S x S`` pixels of the samples at ``indices``, decoded on first use.

    :meth:`batch` returns the pixels of some sample indices as one ``N x S x S`` tensor, decoding
    the ones not seen yet (in parallel). Safe to call from one thread at a time.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        samples: Sequence[tuple[str, int]],
        indices: Sequence[int],
        prep: Preprocessing,
        *,
        threads: int = 0,
        max_memory_bytes: int = DEFAULT_CACHE_MEMORY_MB * 1024 * 1024,
        cache_dir: str | os.PathLike[str] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.root = Path(root)
        self.paths = [str(path) for path, _ in samples]
        wanted = sorted({int(i) for i in indices})
        bad = [i for i in wanted if not 0 <= i < len(self.paths)]
        if bad:
            raise DatasetError(
                f"Sample indices {bad[:5]} are out of range for {len(samples)} samples."
            )
        self.index_at = wanted  # row -> sample index
        self.row_of = {index: row for row, index in enumerate(wanted)}
        self.size = prep.input_size
        self.read_long_side = reading_long_side(prep)
        self.threads = decode_threads(threads)
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self._resize = GrayscaleResize(self.size)
        self._ready = np.zeros(len(wanted), dtype=bool)
        self._lock = threading.Lock()
        shape = (len(wanted), self.size, self.size)
        nbytes = int(np.prod(shape))
        self.on_disk = nbytes > max_memory_bytes
        if self.on_disk:
            self.pixels = self._mapped(shape, cache_dir)
        else:
            self.pixels = torch.empty(shape, dtype=torch.uint8)
        logger.info(
            "decoded-image cache: %d images at %d px, %.1f MB %s",
            len(wanted),
            self.size,
            nbytes / 1e6,
            "memory-mapped" if self.on_disk else "in memory",
        )

    @staticmethod
    def _mapped(
        shape: tuple[int, int, int], cache_dir: str | os.PathLike[str] | None
    ) -> torch.Tensor:
        folder = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="cxr-decoded-", suffix=".u8", dir=folder)
        os.close(handle)
        try:
            array = np.memmap(name, dtype=np.uint8, mode="w+", shape=shape)
        finally:
            os.unlink(name)  # the mapping keeps the data; no file outlives the run
        return torch.from_numpy(array)

    def __len__(self) -> int:
        return len(self.row_of)

    @property
    def decoded(self) -> int:
        """How many images have been decoded so far."""
        return int(self._ready.sum())

    def rows(self, indices: Sequence[int]) -> torch.Tensor:
        """Cache rows (int64) of sample ``indices``; a sample outside the cache is an error."""
        try:
            return torch.tensor([self.row_of[int(i)] for i in indices], dtype=torch.int64)
        except KeyError as exc:
            raise DatasetError(f"Sample {exc.args[0]} is not in this run's image cache.") from None

    def batch(self, indices: Sequence[int], *, pin_memory: bool = False) -> torch.Tensor:
        """uint8 ``N x S x S`` pixels of sample ``indices`` (decoded now if not yet)."""
        rows = self.rows(indices)
        self.ensure(rows)
        out = torch.empty(
            (len(rows), self.size, self.size), dtype=torch.uint8, pin_memory=pin_memory
        )
        return torch.index_select(self.pixels, 0, rows, out=out)

    def ensure(self, rows: torch.Tensor) -> None:
        """Decode the rows that are not decoded yet, in parallel."""
        with self._lock:
            missing = sorted({int(r) for r in rows.tolist() if not self._ready[r]})
            if not missing:
                return
            if len(missing) == 1 or self.threads == 1:
                for row in missing:
                    self._decode(row)
            else:
                with ThreadPoolExecutor(min(self.threads, len(missing))) as pool:
                    list(pool.map(self._decode, missing))

    def _decode(self, row: int) -> None:
        image = load_image(
            dataset_file(self.root, self.paths[self.index_at[row]]),
            max_bytes=self.max_bytes,
            max_pixels=self.max_pixels,
            read_long_side=self.read_long_side,
        )
        gray = self._resize(image)  # float32 in [0, 1], exactly the inference resize
        self.pixels[row] = torch.from_numpy(np.rint(gray * 255.0).astype(np.uint8))
        self._ready[row] = True
