"""What an image must be to be decoded (its pixel count) and, as an upload, to be accepted."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from .errors import (
    FORMAT_NAMES,
    RESUBMIT_HINT,
    UploadRejected,
    reject_corrupt,
    reject_too_many_pixels,
)
from .sniff import jpeg_end, png_end


@dataclass(frozen=True)
class UploadPolicy:
    """What a file a user uploads must also be, beyond decodable (training data is not held to it).

    ``min_side``: pixels on the short side, at least; ``max_aspect_ratio``: long side over short
    side, at most. Both are checked from the header, before any pixel is decoded. A PNG or JPEG
    must also end at its end marker (IEND, EOI): bytes after it (a polyglot: HTML, a ZIP or a
    script riding on an image) are refused, never stored or served. Only NUL padding after the
    marker is accepted, as some devices write it to round a file's length; it carries nothing.
    A JPEG must be grey or RGB by its header: a CMYK or YCCK one (a print format) is refused
    before it is decoded.
    """

    min_side: int
    max_aspect_ratio: float


def check_plausible(width: int, height: int, policy: UploadPolicy | None) -> None:
    """Refuse a picture no chest X-ray has: too small to read, or a sliver (1 x 1, 20000 x 8)."""
    if policy is None or width <= 0 or height <= 0:
        return
    short, long = sorted((width, height))
    if short < policy.min_side:
        raise UploadRejected(
            f"The image is only {width} x {height} pixels: a chest X-ray needs at least "
            f"{policy.min_side} pixels on its shorter side to be read. Please upload the image "
            "at its full resolution, not a thumbnail or an icon.",
            code="too_small",
        )
    if long > policy.max_aspect_ratio * short:
        raise UploadRejected(
            f"The image is {width} x {height} pixels, {long / short:.1f} times longer than it "
            f"is wide; a chest X-ray is at most {policy.max_aspect_ratio:g} times. This does not "
            "look like a chest X-ray: please check that you chose the right file.",
            code="bad_aspect_ratio",
        )


# What a JPEG upload may hold, as Pillow names it once the header is read: one grey channel, or
# three (YCbCr, or RGB with Adobe's "no transform"), turned grey from the luma alone. A four-channel
# JPEG (CMYK, YCCK) is a print format: no chest X-ray is one, and libjpeg would hold all four
# channels' coefficients of a progressive file (~8 bytes a pixel) before any grey copy is made.
_UPLOAD_JPEG_MODES = frozenset({"L", "RGB"})


def check_jpeg_colour(probe: Image.Image, policy: UploadPolicy | None) -> None:
    """Refuse a JPEG upload stored in a colour model other than grey or RGB (from its header)."""
    if policy is None or probe.mode in _UPLOAD_JPEG_MODES:
        return
    kind = "YCCK" if probe.mode == "CMYK" and probe.info.get("adobe_transform") == 2 else probe.mode
    raise UploadRejected(
        f"The JPEG image is stored in {kind} colour, a format for printing, not for an X-ray, so "
        "it is not accepted. Please export the image again as a greyscale (or RGB) JPEG or PNG, "
        "or upload the DICOM file.",
        code="unsupported_colour",
    )


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise UploadRejected(
            f"The image declares impossible dimensions ({width} x {height} pixels). "
            f"{RESUBMIT_HINT}",
            code="corrupt",
        )
    if width * height > max_pixels:
        raise reject_too_many_pixels(width, height, max_pixels)


def check_ends_at_end_marker(data: bytes, fmt: str) -> None:
    """Refuse bytes after a PNG's IEND or a JPEG's EOI, other than NUL padding (a polyglot)."""
    end = png_end(data) if fmt == "PNG" else jpeg_end(data)
    marker = "IEND" if fmt == "PNG" else "end-of-image"
    if end is None:
        raise reject_corrupt(fmt, f"it has no {marker} marker")
    extra = len(data) - end
    if extra and data.count(b"\x00", end) != extra:
        raise UploadRejected(
            f"The {FORMAT_NAMES[fmt]} carries {extra:,} bytes of other data after its "
            f"{marker} marker. An X-ray file holds only the image, so it is refused: such a "
            "file can hide a web page or a program. Please export the image again from its "
            "source (a PACS viewer or the modality) and upload the new file.",
            code="trailing_data",
        )
