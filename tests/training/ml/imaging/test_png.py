"""The 8-bit PNG writer: exact round trips, and what it refuses."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from training.ml import imaging


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (64, 48), (300, 257)])
def test_the_display_png_writer_round_trips_exactly(shape):
    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    pixels[:, : shape[1] // 2] = np.arange(shape[1] // 2, dtype=np.uint8)  # some runs, too
    for channels, mode in ((1, "L"), (3, "RGB"), (4, "RGBA")):
        picture = (
            pixels
            if channels == 1
            else np.stack([np.roll(pixels, k, axis=1) for k in range(channels)], axis=2)
        )
        data = imaging.png_uint8(picture)
        with Image.open(BytesIO(data)) as probe:
            probe.verify()  # chunk CRCs and structure
        with Image.open(BytesIO(data)) as shown:
            assert (shown.format, shown.mode, shown.size) == ("PNG", mode, shape[::-1])
            assert np.array_equal(np.asarray(shown), picture)


def test_the_png_writer_refuses_what_it_cannot_write_faithfully():
    for bad in (
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((4, 4), np.uint16),
        np.zeros((0, 4), np.uint8),
        np.zeros((4, 4, 3, 1), np.uint8),
    ):
        with pytest.raises(ValueError, match="uint8 array"):
            imaging.png_uint8(bad)
