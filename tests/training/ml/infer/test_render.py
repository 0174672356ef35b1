from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.training.ml.samples import xray_8bit, xray_16bit
from training.ml.infer.render import cam_to_heatmap_rgba, render_overlay


def test_the_heatmap_is_rgba_of_the_requested_size_and_clear_where_the_cam_is_low() -> None:
    cam = np.zeros((64, 64), dtype=np.float32)
    cam[:, 32:] = 1.0

    heatmap = cam_to_heatmap_rgba(cam, (200, 120))

    assert heatmap.mode == "RGBA" and heatmap.size == (200, 120)
    rgba = np.asarray(heatmap)
    assert (rgba[:, :80, 3] == 0).all()
    assert (rgba[:, 120:, 3] == 220).all()
    assert not np.array_equal(rgba[0, 0, :3], rgba[0, -1, :3])  # low and high get different colours


def test_the_overlay_is_rgb_downscaled_to_max_side_and_untouched_where_the_cam_is_zero() -> None:
    image = xray_16bit(2000, 1500)
    cam = np.zeros((64, 64), dtype=np.float32)
    cam[20:40, 20:40] = 1.0

    overlay = render_overlay(image, cam, opacity=0.6, max_side=1024)

    assert overlay.mode == "RGB" and overlay.size == (1024, 768)
    pixels = np.asarray(overlay).astype(int)
    corner = pixels[:100, :100]
    assert (corner[..., 0] == corner[..., 1]).all() and (corner[..., 1] == corner[..., 2]).all()
    centre = pixels[400:440, 500:540]
    assert np.abs(centre[..., 0] - centre[..., 2]).mean() > 10  # coloured where the model looked


@pytest.mark.parametrize("size", [(2500, 2049), (1250, 1025), (3001, 1000)])
def test_the_overlay_shrinks_with_averaging_not_by_picking_pixels(size) -> None:
    """1-pixel stripes (the worst case for aliasing) come out grey at any factor, as area
    averaging leaves them (36..164 here), not as bands of black and white."""
    width, height = size
    stripes = np.zeros((height, width), dtype=np.uint8)
    stripes[:, ::2] = 200
    overlay = render_overlay(Image.fromarray(stripes), np.zeros((7, 7), dtype=np.float32))
    scale = 1024 / max(size)
    assert overlay.size == (round(width * scale), round(height * scale))
    grey = np.asarray(overlay)[..., 0].astype(int)
    assert abs(grey.mean() - 100) < 3
    # A pixel pick (OpenCV's bilinear, Pillow's box) leaves 0 and 200 at these factors.
    assert grey.min() > 30 and grey.max() < 170


def test_a_small_image_is_not_upscaled_and_zero_opacity_shows_the_xray_only() -> None:
    image = xray_8bit(100, 80)
    overlay = render_overlay(image, np.ones((64, 64), dtype=np.float32), opacity=0.0)
    assert overlay.size == (100, 80)
    assert np.array_equal(np.asarray(overlay), np.asarray(image.convert("RGB")))
