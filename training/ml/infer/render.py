"""Grad-CAM rendering: the colourised heatmap (RGBA, transparent where the model did not look), the
overlay on the X-ray, and their PNG encoding for the worker."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from ..imaging import png_uint8
from ..preprocessing import OVERLAY_LONG_SIDE, to_display_image

__all__ = ["HEATMAP_MAX_SIDE", "cam_to_heatmap_rgba", "png_bytes", "render_overlay", "render_pngs"]

# A CAM is a 7x7..14x14 map upsampled: more pixels add nothing (the browser scales it smoothly;
# 128 pixels are 9 or more per cell). Half the PNG work of a 224-pixel map.
HEATMAP_MAX_SIDE = 128


@lru_cache(maxsize=8)
def _colormap_lut(name: str) -> np.ndarray:
    import matplotlib  # no pyplot: no GUI backend in a worker

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(
            f"Unknown colormap {name!r}; use a matplotlib colormap such as 'inferno' or 'viridis'."
        ) from None
    return np.rint(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)


def _resize_cam(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear (area when shrinking) resize of a float32 map, clipped to [0, 1]."""
    import cv2  # opencv is pytorch-grad-cam's own dependency

    if values.shape != (height, width):
        shrinking = width < values.shape[1] and height < values.shape[0]
        values = cv2.resize(
            values, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
    return np.clip(values, 0.0, 1.0)


def _heat_colours(values: np.ndarray, colormap: str) -> tuple[np.ndarray, np.ndarray]:
    """RGB (uint8 HxWx3) on the colormap, and alpha (uint8 HxW), growing with the CAM.

    OpenCV's LUT: numpy's fancy indexing is ~5x slower on a megapixel overlay."""
    import cv2

    index = cv2.convertScaleAbs(values, alpha=255.0)  # round(v * 255) as uint8
    lut = _colormap_lut(colormap).reshape(256, 1, 3)
    rgb = cv2.LUT(cv2.merge([index, index, index]), lut)
    # round(min(v * 1.4, 1) * 220) for v in [0, 1], in two uint8 passes instead of four in float.
    alpha = np.minimum(cv2.convertScaleAbs(values, alpha=1.4 * 220.0), np.uint8(220))
    return rgb, alpha


def _cam_values(cam: np.ndarray) -> np.ndarray:
    values = np.asarray(cam, dtype=np.float32)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"cam must be a 2-D array, got shape {values.shape}.")
    return np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)


def cam_to_heatmap_rgba(
    cam: np.ndarray, size: tuple[int, int], *, colormap: str = "inferno"
) -> Image.Image:
    """A ``size`` = (width, height) RGBA heatmap; alpha grows with the CAM so low values are clear.

    The map is resized (bilinear) before colouring, so colours stay on the colormap. Inferno is
    perceptually uniform and still reads when printed in grayscale.
    """
    values = _cam_values(cam)
    width, height = (int(s) for s in size)
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive (width, height), got {size!r}.")
    rgb, alpha = _heat_colours(_resize_cam(values, width, height), colormap)
    return Image.fromarray(np.dstack([rgb, alpha]))


def render_overlay(
    image: Image.Image, cam: np.ndarray, *, opacity: float = 0.5, max_side: int = OVERLAY_LONG_SIDE
) -> Image.Image:
    """The X-ray (RGB, long side at most ``max_side``) with the heatmap blended at ``opacity``.

    Blended with OpenCV on the grayscale picture, out = colour * w + gray * (1 - w) with
    w = alpha * opacity (a megapixel overlay in a few milliseconds).
    """
    import cv2

    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity!r}.")
    if max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side!r}.")
    values = _cam_values(cam)
    # Through grayscale: 16-bit images would clip to white with a direct convert("RGB").
    base: np.ndarray = np.asarray(
        image if image.mode == "L" else to_display_image(image), dtype=np.uint8
    )
    height, width = base.shape
    if max(width, height) > max_side:
        # Area averaging: antialiased. Pictures come here read for a model, at less than twice
        # the overlay's size (training.ml.preprocessing.reduce_for_reading).
        scale = max_side / max(width, height)
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        base = cv2.resize(base, new_size, interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(base, cv2.COLOR_GRAY2RGB)
    rgb, alpha = _heat_colours(_resize_cam(values, base.shape[1], base.shape[0]), "inferno")
    weight = alpha.astype(np.float32)
    weight *= np.float32(opacity / 255.0)
    return Image.fromarray(cv2.blendLinear(rgb, gray, weight, np.float32(1.0) - weight))


def render_pngs(
    picture: Image.Image, cam: np.ndarray, *, overlay: bool = True
) -> tuple[bytes, bytes | None]:
    """The colourised heatmap (RGBA, transparent where the model did not look) and the overlay."""
    w, h = picture.size
    scale = min(1.0, HEATMAP_MAX_SIDE / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    heatmap = cam_to_heatmap_rgba(cam, size)
    return png_bytes(heatmap), (png_bytes(render_overlay(picture, cam)) if overlay else None)


def png_bytes(image: Image.Image) -> bytes:
    """Encode an L, RGB or RGBA image as PNG with the writer the display copies use
    (``png_uint8``: the "up" filter, ISA-L deflate; several times faster than OpenCV's or
    Pillow's encoder, figures in bench/RESULTS.md). Lossless."""
    if image.mode not in ("L", "RGB", "RGBA"):
        raise ValueError(f"png_bytes takes L, RGB or RGBA images, not {image.mode}.")
    return png_uint8(np.asarray(image))
