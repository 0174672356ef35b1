"""Any bit depth to 8 bits: a value range mapped linearly to 0..255."""

from __future__ import annotations

import numpy as np
from PIL import Image

# Rows of a 16/32-bit picture scaled at a time: a strip's float copy stays a few megabytes.
_STRIP_PIXELS = 1 << 20


def wide_to_uint8(img: Image.Image) -> np.ndarray:
    """:func:`minmax_to_uint8` of a 16- or 32-bit image, a strip of rows at a time, so that
    neither a whole-image array copy nor its float32 copy (4 bytes a pixel) is ever made."""
    width, height = img.size
    step = max(1, _STRIP_PIXELS // max(1, width))
    tops = range(0, height, step)

    def strip(top: int) -> np.ndarray:
        arr = np.asarray(img.crop((0, top, width, min(height, top + step))))
        if arr.dtype.kind == "f":
            arr = np.where(np.isfinite(arr), arr, 0)
        return arr

    out = np.empty((height, width), dtype=np.uint8)
    if out.size == 0:
        return out
    bounds = [(float(a.min()), float(a.max())) for a in map(strip, tops)]
    lo, hi = min(b[0] for b in bounds), max(b[1] for b in bounds)
    for top in tops:
        out[top : top + step] = scale_to_uint8(strip(top), lo, hi)
    return out


def minmax_to_uint8(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    finite = np.isfinite(arr) if arr.dtype.kind == "f" else None
    if finite is not None and not finite.all():
        arr = np.where(finite, arr, 0)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    return scale_to_uint8(arr, float(arr.min()), float(arr.max()))


def scale_to_uint8(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``lo..hi`` linearly to 0..255 (clipping outside); a flat range gives zeros."""
    if not hi > lo:  # also catches NaN
        return np.zeros(arr.shape, dtype=np.uint8)
    # float32 is exact for 16-bit integers and halves the memory of float64.
    out = arr.astype(np.float32)
    out -= np.float32(lo)
    out *= np.float32(255.0 / (hi - lo))
    np.clip(out, 0, 255, out=out)
    np.rint(out, out=out)
    return out.astype(np.uint8)
