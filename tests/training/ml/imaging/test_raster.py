"""PNG and JPEG that we accept, and how they look once decoded."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from tests import imagegen
from tests.training.ml.imaging.decoding import (
    decode,
    pixels,
)
from training.ml.imaging import sniff_format


def test_a_png_decodes_as_png_whatever_it_is_called() -> None:
    original = imagegen.make_xray(64, 48)
    decoded = decode(imagegen.png_bytes(original))
    assert decoded.format == "PNG"
    assert (decoded.width, decoded.height) == (64, 48)
    assert decoded.source_mode == "L"
    assert decoded.dicom is None
    assert np.array_equal(pixels(decoded), np.asarray(original))


def test_a_jpeg_named_png_decodes_as_jpeg_because_content_decides() -> None:
    decoded = decode(imagegen.jpeg_bytes())
    assert decoded.format == "JPEG"
    assert decoded.image.mode == "L"


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_colour_pngs_become_the_same_grayscale(mode: str) -> None:
    original = imagegen.make_xray(64, 64)
    decoded = decode(imagegen.png_bytes(original.convert(mode)))
    assert decoded.source_mode == mode
    assert np.array_equal(pixels(decoded), np.asarray(original))


@pytest.mark.parametrize("mode", ["P", "1"])
def test_palette_and_bilevel_pngs_become_grayscale(mode: str) -> None:
    decoded = decode(imagegen.png_bytes(mode=mode, width=40, height=30))
    assert decoded.source_mode == mode
    assert pixels(decoded).shape == (30, 40)


def test_a_jpeg_with_exif_orientation_6_comes_out_rotated() -> None:
    original = imagegen.make_xray(200, 100)
    original.paste(255, (0, 0, 40, 20))  # a white block top-left of the stored pixels
    decoded = decode(imagegen.jpeg_bytes(original, exif_orientation=6))

    assert (decoded.width, decoded.height) == (100, 200)
    # Orientation 6 means "rotate 90 degrees clockwise to display": top-left goes top-right.
    shown = pixels(decoded).astype(int)
    assert shown[:40, -20:].mean() > 240
    assert shown[:40, :20].mean() < 200
    expected = np.asarray(original.transpose(Image.Transpose.ROTATE_270), dtype=int)
    assert np.abs(shown - expected).mean() < 3  # JPEG is lossy, but barely at quality 90


def test_a_jpeg_without_exif_orientation_keeps_its_shape() -> None:
    decoded = decode(imagegen.jpeg_bytes(imagegen.make_xray(200, 100)))
    assert (decoded.width, decoded.height) == (200, 100)


def test_a_16_bit_png_is_stretched_to_the_full_8_bit_range() -> None:
    data = imagegen.png16_bytes(64, 32, lo=1000, hi=40000)
    with Image.open(BytesIO(data)) as raw:
        values16 = np.asarray(raw).astype(int)
    decoded = decode(data)

    assert decoded.source_mode.startswith("I;16")
    out = pixels(decoded)
    assert out.min() == 0 and out.max() == 255
    assert out.flat[values16.argmin()] == 0 and out.flat[values16.argmax()] == 255
    # Order of brightness is kept (a linear map, not clipping at 255 as convert("L") does).
    expected = np.rint((values16 - 1000) * 255 / (40000 - 1000))
    assert np.abs(out - expected).max() <= 1


def test_a_flat_16_bit_png_becomes_black_without_dividing_by_zero() -> None:
    flat = Image.fromarray(np.full((8, 8), 5000, dtype=np.uint16))
    decoded = decode(imagegen.png_bytes(flat))
    assert not pixels(decoded).any()


def test_to_png_bytes_round_trips_to_the_same_pixels() -> None:
    decoded = decode(imagegen.jpeg_bytes(imagegen.make_xray(80, 60), exif_orientation=6))
    png = decoded.to_png_bytes()
    assert sniff_format(png) == "PNG"
    with Image.open(BytesIO(png)) as again:
        assert again.mode == "L"
        assert np.array_equal(np.asarray(again), pixels(decoded))
