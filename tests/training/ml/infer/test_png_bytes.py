"""PNG encoding of rendered images (through the imaging core's PNG writer)."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_png_bytes_keeps_every_pixel_and_the_channel_order(mode):
    from training.ml.infer.render import png_bytes

    rng = np.random.default_rng(3)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(37, 53, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels)
    data = png_bytes(image)
    assert data.startswith(b"\x89PNG")
    with Image.open(BytesIO(data)) as decoded:
        assert decoded.mode == mode and decoded.size == (53, 37)
        assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_png_bytes_refuses_modes_it_cannot_write_faithfully():
    from training.ml.infer.render import png_bytes

    with pytest.raises(ValueError, match="L, RGB or RGBA"):
        png_bytes(Image.new("I;16", (4, 4)))
