"""A DICOM frame's stored values to display values 0..255: modality LUT, VOI, photometry."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pydicom.pixels
from PIL import Image

from .intensity import minmax_to_uint8, scale_to_uint8

logger = logging.getLogger(__name__)


def dicom_to_uint8(arr: np.ndarray, ds: Any, photometric: str) -> np.ndarray:
    """First-frame pixels -> display values 0..255 (air black, as MONOCHROME2)."""
    if photometric == "PALETTE COLOR":
        arr = pydicom.pixels.apply_color_lut(arr, ds)
    if arr.ndim == 3:
        # Colour (pydicom already converted YBR to RGB): luminance, then 0..255.
        rgb = arr[..., :3]
        if rgb.dtype == np.uint8:
            return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"))
        luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return minmax_to_uint8(luma)
    if arr.ndim != 2:
        raise ValueError(f"unexpected pixel array shape {arr.shape}")

    values = pydicom.pixels.apply_modality_lut(arr, ds)
    out = _apply_voi_to_uint8(values, ds)
    if photometric == "MONOCHROME1":
        # MONOCHROME1: the minimum value is white; invert so air is black like MONOCHROME2.
        out = 255 - out
    return out


def _voi_kind(ds: Any) -> str | None:
    """Which VOI transform pydicom's apply_voi_lut will use ("lut", "window" or None)."""
    seq = ds.get("VOILUTSequence")
    if seq:
        item = seq[0]
        if item.get("LUTDescriptor") is not None and item.get("LUTData") is not None:
            return "lut"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        return "window"
    return None


def _apply_voi_to_uint8(values: np.ndarray, ds: Any) -> np.ndarray:
    """Apply the VOI LUT Sequence or the window, and map its OUTPUT range to 0..255.

    The transform's output range (not the pixels' actual min..max) is what maps to 0..255, so
    a window keeps its meaning: values below it are 0, above it 255. With no VOI, min..max.
    A broken VOI (a width < 1, a malformed LUT) is only a display hint: fall back to min..max.
    As pydicom's ``apply_voi_lut`` does, the LUT Sequence wins when both are present.
    """
    try:
        kind = _voi_kind(ds)
        if kind == "lut":
            return _apply_voi_lut_sequence(values, ds)
        if kind == "window":
            with np.errstate(all="ignore"):
                out = pydicom.pixels.apply_windowing(values, ds)
                # A linear or sigmoid window saturates at its output bounds far outside it.
                bounds = pydicom.pixels.apply_windowing(np.array([-1e30, 1e30]), ds)
            return scale_to_uint8(out, float(bounds.min()), float(bounds.max()))
    except Exception:  # noqa: BLE001 - display hint only
        logger.info("ignoring unusable VOI LUT/window in DICOM upload", exc_info=True)
    return minmax_to_uint8(values)


def _apply_voi_lut_sequence(values: np.ndarray, ds: Any) -> np.ndarray:
    """Apply the first VOI LUT Sequence item (PS3.3 C.11.2.1.1), output scaled to 0..255.

    Not pydicom's ``apply_voi``: in pydicom 3.0.2 it builds its index array with the LUT's
    entry type, so with 8-bit entries every input above 255 wraps around (a 4096-entry 8-bit
    LUT for 12-bit data maps garbage). Scaling uses the LUT's actual min..max, because some
    devices declare a bit depth that does not match their LUT data.
    """
    item = ds.VOILUTSequence[0]
    descriptor = [int(v) for v in item.LUTDescriptor]
    entries = descriptor[0] or 65536
    first = descriptor[1]
    if first > 0x7FFF and int(ds.get("PixelRepresentation") or 0) == 1:
        first -= 0x10000  # US-encoded descriptor for signed pixel data
    raw = item.LUTData
    if isinstance(raw, bytes | bytearray):  # VR OW
        big_endian = ds.file_meta.get("TransferSyntaxUID") == "1.2.840.10008.1.2.2"
        lut = np.frombuffer(raw, dtype=">u2" if big_endian else "<u2")
    else:  # VR US: one int or a list of ints
        lut = np.atleast_1d(np.asarray(raw, dtype=np.int64))
    lut = lut[:entries]
    if lut.size == 0:
        raise ValueError("empty VOI LUT Data")
    index = np.rint(values) - first
    np.clip(index, 0, lut.size - 1, out=index)
    out = lut[index.astype(np.intp)]
    return scale_to_uint8(out, float(lut.min()), float(lut.max()))
