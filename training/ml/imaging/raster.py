"""PNG and JPEG: headers checked, then decoded to 8-bit grayscale as stored or as read."""

from __future__ import annotations

import logging
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps

from training.ml.preprocessing import jpeg_draft

from .decoded import DecodedImage
from .errors import reject_corrupt
from .intensity import wide_to_uint8
from .policy import (
    UploadPolicy,
    check_ends_at_end_marker,
    check_jpeg_colour,
    check_pixels,
    check_plausible,
)
from .sniff import jpeg_declared_size, png_declared_size

logger = logging.getLogger(__name__)

_HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


def decode_raster(
    data: bytes,
    fmt: str,
    *,
    max_pixels: int,
    draft_long_side: int | None = None,
    policy: UploadPolicy | None = None,
) -> DecodedImage:
    # 0. Our own header read first, so that a bomb is rejected with its dimensions even when
    #    it is big enough for Pillow's own guard to refuse it inside Image.open.
    declared = png_declared_size(data) if fmt == "PNG" else jpeg_declared_size(data)
    if declared is not None:
        check_pixels(*declared, max_pixels)
        check_plausible(*declared, policy)
    if policy is not None:
        check_ends_at_end_marker(data, fmt)

    # 1. Header only: Image.open reads the size without decoding pixels.
    with Image.open(BytesIO(data), formats=[fmt]) as probe:
        width, height = probe.size
        check_pixels(width, height, max_pixels)
        check_plausible(width, height, policy)
        if fmt == "JPEG":
            check_jpeg_colour(probe, policy)
        # verify() checks the structure (PNG chunk CRCs) but leaves the image unusable.
        probe.verify()

    # 2. Reopen and decode for real. load() raises OSError on a truncated file because we never
    #    set ImageFile.LOAD_TRUNCATED_IMAGES.
    stored = Image.open(BytesIO(data), formats=[fmt])
    source_mode = stored.mode
    turned = fmt == "JPEG" and _exif_orientation(stored) not in (None, 1)
    # 8-bit grayscale as stored (not converted, not turned), with nothing a browser would render
    # differently: the file itself serves as the display copy.
    as_stored = (
        source_mode == "L"
        and not turned
        and not any(k in stored.info for k in ("transparency", "gamma", "icc_profile"))
    )
    if as_stored and draft_long_side is not None:
        jpeg_draft(stored, draft_long_side)
    if fmt == "PNG" and source_mode in _LIBPNG_GRAY_MODES:
        stored.close()
        gray = _png_to_gray_by_libpng(data)
    else:
        if fmt == "JPEG" and source_mode in ("RGB", "YCbCr"):
            stored.draft("L", None)  # libjpeg decodes the luma alone: no RGB copy
        stored.load()
        img = _exif_transpose(stored) if turned else stored
        gray = _to_grayscale(img)
    return DecodedImage(
        format=fmt,
        image=gray,
        width=width if as_stored else gray.width,
        height=height if as_stored else gray.height,
        source_mode=source_mode,
        dicom=None,
        original_is_display=as_stored,
    )


# Pillow would hold these at 2-4 bytes a pixel (a 7000 x 7000 RGBA PNG: 196 MB) before the grey copy.
_LIBPNG_GRAY_MODES = frozenset({"RGB", "RGBA", "LA"})


def _png_to_gray_by_libpng(data: bytes) -> Image.Image:
    """A colour PNG decoded straight to 8-bit grey by libpng (through OpenCV), row by row.

    The same values as Pillow's ``convert("L")`` (ITU-R 601-2 luma, alpha ignored) to within one
    level of rounding, without the full-colour copy. Its pixels only: Pillow has already checked
    the file's structure and chunk checksums, and an EXIF orientation in a PNG is not applied
    (as before, when Pillow decoded it).
    """
    import cv2  # only here: a colour PNG is rare on the upload path

    flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if pixels is None:
        raise reject_corrupt("PNG", "its pixel data cannot be decoded")
    return Image.fromarray(pixels)


def _exif_orientation(img: Image.Image) -> int | None:
    """The EXIF Orientation tag (1 = as stored), or None without EXIF or when it is unreadable."""
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - metadata only; the pixels themselves decoded fine
        logger.info("ignoring unreadable EXIF block", exc_info=True)
        return None
    return value if isinstance(value, int) else None


def _exif_transpose(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - metadata only; the pixels themselves decoded fine
        logger.info("ignoring unreadable EXIF orientation", exc_info=True)
        return img


def _to_grayscale(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit "L". High bit depths are stretched by their actual min..max."""
    mode = img.mode
    if mode == "L":
        return img
    if mode in _HIGH_BIT_DEPTH_MODES:
        # Pillow's convert("L") clips 16-bit values at 255 instead of scaling them.
        return Image.fromarray(wide_to_uint8(img))
    try:
        return img.convert("L")
    except ValueError:  # modes with no direct conversion to L (e.g. some YCbCr/LAB variants)
        return img.convert("RGB").convert("L")
