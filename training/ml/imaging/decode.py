"""Decode and validate uploaded chest X-ray files (PNG, JPEG, DICOM) on the web request path.

Plain Python on purpose: no Django and no torch import, because the upload view runs this and the
request path must never load torch. Everything a user can upload goes through
:func:`decode_upload`, which either returns an 8-bit grayscale :class:`DecodedImage` or raises
:class:`UploadRejected` with a sentence the view can show as is.

Safety rules (see DESIGN.md, "Pitfalls"):

* the content decides the format (:func:`sniff_format`), never the file name;
* the pixel count is checked before any pixel is decoded, and Pillow's own decompression-bomb
  warning is turned into an error while we decode;
* ``verify()`` then reopen, and never ``ImageFile.LOAD_TRUNCATED_IMAGES``: a truncated file is
  rejected, not silently padded with grey;
* DICOM is read without ``force=True`` (Part-10 files only), a deflated data set is inflated with
  a size bound first, and a compressed frame's own header is checked before it is decoded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
import pydicom.encaps
import pydicom.pixels
from isal import isal_zlib
from PIL import Image, ImageOps
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID

from training.ml.preprocessing import jpeg_draft, reduce_for_reading

logger = logging.getLogger(__name__)

__all__ = [
    "DecodedImage",
    "DicomInfo",
    "UploadPolicy",
    "UploadRejected",
    "decode_upload",
    "sniff_format",
]

_MB = 1024 * 1024

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
DICOM_PREAMBLE_LENGTH = 128
DICOM_MAGIC = b"DICM"

#: The codes decode_upload raises, for callers that branch on them (and for tests).
REJECTION_CODES = frozenset(
    {
        "empty",
        "too_large",
        "unsupported_format",
        "corrupt",
        "too_many_pixels",
        "dicom_no_pixels",
        "dicom_unsupported",
        "too_small",
        "bad_aspect_ratio",
        "trailing_data",
        "unsupported_colour",
    }
)

_FORMAT_NAMES = {"PNG": "PNG image", "JPEG": "JPEG image", "DICOM": "DICOM file"}

_RESUBMIT_HINT = "Please export the image again from its source and upload the new file."


class UploadRejected(ValueError):
    """An upload we refuse. ``str(exc)`` is a user-facing sentence; ``exc.code`` a machine code.

    :func:`decode_upload` raises only the codes in :data:`REJECTION_CODES`; callers (the upload
    service) may raise it with their own codes for their own checks.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the keyword-only ``code`` through pickling (e.g. across processes).
        return (_make_rejection, (self.message, self.code))


def _make_rejection(message: str, code: str) -> UploadRejected:
    return UploadRejected(message, code=code)


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


@dataclass
class DicomInfo:
    """What the DICOM header tells us about the patient, the study and the image."""

    patient_id: str = ""
    patient_name: str = ""
    patient_sex: str = ""  # "M", "F", "O" or ""
    patient_birth_date: datetime.date | None = None
    accession_number: str = ""
    study_date: datetime.date | None = None
    study_description: str = ""
    view_position: str = ""  # "PA", "AP", "LATERAL" or ""
    modality: str = ""
    body_part: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    sop_instance_uid: str = ""
    photometric_interpretation: str = ""
    bits_stored: int | None = None
    #: A small JSON-safe subset of header tags for display (keyword -> text); never pixel data.
    tags: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (dates as ISO strings), e.g. for a JSONField."""
        out = dataclasses.asdict(self)
        for key in ("patient_birth_date", "study_date"):
            value = out[key]
            out[key] = value.isoformat() if value is not None else None
        return out


@dataclass
class DecodedImage:
    """An accepted upload, decoded to an 8-bit grayscale display image."""

    format: str  # "PNG" | "JPEG" | "DICOM", from the content
    # Mode "L", loaded, EXIF orientation applied for JPEG; smaller than width x height when
    # decode_upload was given read_long_side or check_only.
    image: Image.Image
    width: int  # the stored size (after the EXIF turn)
    height: int
    source_mode: str  # e.g. "RGB", "I;16", "MONOCHROME1 12-bit"
    dicom: DicomInfo | None = None
    # The uploaded file itself is a faithful display copy (an 8-bit grayscale PNG or JPEG, with
    # no EXIF turn, colour profile, gamma or transparency a browser would render differently): no
    # PNG is encoded on the request path (~90 ms of CPU for a 2k-pixel radiograph), the file is
    # stored once, and the worker decodes the smaller file.
    original_is_display: bool = False

    def to_png_bytes(self) -> bytes:
        """The re-encoded display copy (8-bit grayscale PNG): see :func:`png_uint8`."""
        if self.image.size != (self.width, self.height):
            raise ValueError("This image was decoded reduced: it cannot be the display copy.")
        return png_uint8(np.asarray(self.image, dtype=np.uint8))


_PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: grayscale, RGB, RGBA


def png_uint8(pixels: np.ndarray) -> bytes:
    """A PNG of an 8-bit picture: a 2-D array (grayscale), or H x W x 3 (RGB) or x 4 (RGBA).

    Written here rather than by Pillow or OpenCV. Every row gets PNG's "up" filter, then Intel's
    ISA-L deflates it at level 1 (python-isal: standard zlib streams, ~5x faster than zlib's
    level 1 and a little smaller). On radiographs, zlib itself was the cost once the filter was
    fixed. Pillow also tries all five filters on every row. A 2048-pixel grayscale picture takes
    ~6 ms here, ~32 ms with zlib and ~96 ms with Pillow. A 1024-pixel RGB overlay takes ~5 ms,
    ~25 ms through OpenCV's encoder. The web process uses it for display copies, the worker for
    the overlays and colour maps.
    """
    channels = 1 if pixels.ndim == 2 else (pixels.shape[2] if pixels.ndim == 3 else 0)
    if channels not in _PNG_COLOUR_TYPES or pixels.dtype != np.uint8 or 0 in pixels.shape[:2]:
        raise ValueError(f"png_uint8 takes a non-empty uint8 array of H x W (grayscale) or "
                         f"H x W x 3 or 4 (RGB, RGBA), not {pixels.dtype} {pixels.shape}.")
    height, width = pixels.shape[:2]
    flat = np.ascontiguousarray(pixels).reshape(height, width * channels)
    rows = np.empty((height, width * channels + 1), dtype=np.uint8)
    rows[:, 0] = 2  # filter type "up": each byte minus the one above it, modulo 256
    rows[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])
    idat = isal_zlib.compress(rows.data, 1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    # 8 bits per sample, the colour type, deflate, adaptive filtering, no interlace.
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------------------------
# Format sniffing
# --------------------------------------------------------------------------------------------


def sniff_format(data: bytes) -> str | None:
    """Return "PNG", "JPEG" or "DICOM" from the file's first bytes, else None.

    DICOM means a Part-10 file: a 128-byte preamble followed by ``DICM``. A bare data set
    without that header is not accepted (reading it would need ``force=True``).
    """
    head = bytes(data[: DICOM_PREAMBLE_LENGTH + len(DICOM_MAGIC)])
    if head.startswith(PNG_SIGNATURE):
        return "PNG"
    if head.startswith(JPEG_SIGNATURE):
        return "JPEG"
    if head[DICOM_PREAMBLE_LENGTH:] == DICOM_MAGIC:
        return "DICOM"
    return None


# Only used to make the "unsupported format" message more helpful.
_OTHER_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"II*\x00", "a TIFF image"),
    (0, b"MM\x00*", "a TIFF image"),
    (0, b"GIF87a", "a GIF image"),
    (0, b"GIF89a", "a GIF image"),
    (0, b"BM", "a BMP image"),
    (0, b"%PDF", "a PDF document"),
    (0, b"PK\x03\x04", "a ZIP archive"),
    (0, b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (0, b"\xff\x4f\xff\x51", "a JPEG 2000 image"),
    (8, b"WEBP", "a WebP image"),
    (4, b"ftypheic", "a HEIC photo"),
    (4, b"ftypmif1", "a HEIF photo"),
)


def _guess_other_kind(data: bytes) -> str | None:
    for offset, magic, name in _OTHER_SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return name
    # A DICOM data set without the Part-10 preamble usually starts with group 0002 or 0008.
    if data[:2] in (b"\x02\x00", b"\x08\x00") and data[4:6].isalpha():
        return "a DICOM data set without the Part-10 header (128-byte preamble and 'DICM')"
    return None


# --------------------------------------------------------------------------------------------
# Rejections
# --------------------------------------------------------------------------------------------


def _mb(n: int) -> str:
    value = n / _MB
    return f"{value:.1f} MB" if value >= 1 else f"{value:.2f} MB"


def _reject_too_large(size: int, max_bytes: int) -> UploadRejected:
    return UploadRejected(
        f"The file is too large: {_mb(size)} ({size:,} bytes), over the upload limit of "
        f"{_mb(max_bytes)}. Please upload a smaller file, for example the image exported at a "
        "lower resolution.",
        code="too_large",
    )


def _reject_unsupported(data: bytes) -> UploadRejected:
    kind = _guess_other_kind(data)
    found = f"It looks like {kind}. " if kind else ""
    return UploadRejected(
        "This file is not a PNG, JPEG or DICOM image. "
        f"{found}We accept PNG, JPEG and DICOM (Part-10 .dcm) files only, and the file's "
        "content decides, not its name or extension. Please export the X-ray as PNG, JPEG or "
        "DICOM and upload it again.",
        code="unsupported_format",
    )


def _reject_too_many_pixels(width: int, height: int, max_pixels: int) -> UploadRejected:
    return UploadRejected(
        f"The image is too big: {width} x {height} pixels ({width * height:,} pixels), over the "
        f"limit of {max_pixels:,} pixels. Please upload a downscaled copy of the image.",
        code="too_many_pixels",
    )


def _reject_corrupt(fmt: str, detail: str = "") -> UploadRejected:
    what = _FORMAT_NAMES.get(fmt, "file")
    detail = " ".join(detail.split())[:200]
    because = f" ({detail})" if detail else ""
    return UploadRejected(
        f"The {what} is damaged or incomplete (truncated), so it cannot be read{because}. "
        f"{_RESUBMIT_HINT}",
        code="corrupt",
    )


def _reject_dicom_unsupported(ts: str, reason: str = "") -> UploadRejected:
    name = _uid_display(ts) if ts else "an unknown transfer syntax"
    extra = f" ({reason})" if reason else ""
    return UploadRejected(
        f"This DICOM file's pixel data is encoded with {name}, which this server cannot "
        f"decode{extra}. Please export it uncompressed (Explicit VR Little Endian) or with JPEG "
        "or JPEG 2000 compression, or upload a PNG or JPEG export of the image.",
        code="dicom_unsupported",
    )


def _check_plausible(width: int, height: int, policy: UploadPolicy | None) -> None:
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


def _check_jpeg_colour(probe: Image.Image, policy: UploadPolicy | None) -> None:
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


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise UploadRejected(
            f"The image declares impossible dimensions ({width} x {height} pixels). "
            f"{_RESUBMIT_HINT}",
            code="corrupt",
        )
    if width * height > max_pixels:
        raise _reject_too_many_pixels(width, height, max_pixels)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def decode_upload(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    read_long_side: int | None = None,
    check_only: bool = False,
    policy: UploadPolicy | None = None,
) -> DecodedImage:
    """Validate and decode one uploaded file.

    Returns the image as 8-bit grayscale (mode "L"). Raises :class:`UploadRejected` for
    anything we refuse: empty, over ``max_bytes``, not PNG/JPEG/DICOM by content, more than
    ``max_pixels`` pixels (checked before decoding), damaged, a DICOM without an image, or a
    DICOM compression we cannot decode.

    ``width`` and ``height`` are always the stored size; ``image`` may be smaller:

    - ``read_long_side``: ``image`` is read for a model as the workers read an upload's display
      copy, no smaller than that on its long side (the model's
      :func:`~training.ml.preprocessing.reading_long_side`): a JPEG that is its own display copy
      reduced by its decoder (:func:`~training.ml.preprocessing.jpeg_draft`), anything larger
      then by a whole factor (:func:`~training.ml.preprocessing.reduce_for_reading`). Training
      and the benchmark's floor read so;
    - ``check_only``: the upload path, which needs the pixels only to write a display copy. A
      file that is its own display copy (``original_is_display``) is only checked: decoded at an
      eighth of its size, every step of the file still read.

    ``policy``: what a user's upload must also be (:class:`UploadPolicy`); training datasets,
    read with none, keep their small or unusual images.

    Memory stays near one 8-bit copy of the picture (two with the display copy's encoding), not
    one per colour channel or a float copy: colour PNGs are turned grey by libpng row by row,
    colour JPEGs decode their luma only, 16-bit pictures are scaled a strip at a time.
    """
    size = len(data)
    if size == 0:
        raise UploadRejected(
            "The uploaded file is empty (0 bytes). Please choose the image file again and "
            "re-upload it.",
            code="empty",
        )
    if size > max_bytes:
        raise _reject_too_large(size, max_bytes)
    fmt = sniff_format(data)
    if fmt is None:
        raise _reject_unsupported(data)

    try:
        with _decompression_bomb_guard():
            if fmt == "DICOM":
                decoded = _decode_dicom(
                    data, max_bytes=max_bytes, max_pixels=max_pixels, policy=policy
                )
            else:
                draft = 1 if check_only else read_long_side
                decoded = _decode_raster(
                    data, fmt, max_pixels=max_pixels, draft_long_side=draft, policy=policy
                )
            if read_long_side is not None:
                decoded.image = reduce_for_reading(decoded.image, read_long_side)
            return decoded
    except UploadRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        logger.info("upload rejected by Pillow's decompression-bomb check: %s", exc)
        raise UploadRejected(
            "The image declares more pixels than can be decoded safely (a possible "
            "decompression bomb). Please upload a downscaled copy of the image.",
            code="too_many_pixels",
        ) from exc
    except MemoryError as exc:
        raise UploadRejected(
            "The image is too big to decode on this server. Please upload a downscaled copy.",
            code="too_many_pixels",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - the boundary: any decoder failure is a bad file
        logger.info("upload rejected as corrupt %s", fmt, exc_info=True)
        raise _reject_corrupt(fmt, _describe(exc)) from exc


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


@contextlib.contextmanager
def _decompression_bomb_guard() -> Iterator[None]:
    """Make Pillow's DecompressionBombWarning an error for the duration of a decode.

    ``warnings.catch_warnings`` restores the previous filters on exit, so nothing leaks into
    the rest of the process. (It is not thread-safe on Python < 3.14: two overlapping threads
    can at worst leave this stricter filter installed, which is harmless. The explicit
    ``max_pixels`` check is the real guard and does not depend on it.)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # pydicom warns about every odd header value of real-world files ("Invalid value for
        # VR DA"); we handle bad values ourselves, so keep them out of the web log.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
        yield


# --------------------------------------------------------------------------------------------
# PNG / JPEG
# --------------------------------------------------------------------------------------------

_HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


def _decode_raster(
    data: bytes, fmt: str, *, max_pixels: int, draft_long_side: int | None = None,
    policy: UploadPolicy | None = None,
) -> DecodedImage:
    # 0. Our own header read first, so that a bomb is rejected with its dimensions even when
    #    it is big enough for Pillow's own guard to refuse it inside Image.open.
    declared = _png_declared_size(data) if fmt == "PNG" else _jpeg_declared_size(data)
    if declared is not None:
        _check_pixels(*declared, max_pixels)
        _check_plausible(*declared, policy)
    if policy is not None:
        _check_ends_at_end_marker(data, fmt)

    # 1. Header only: Image.open reads the size without decoding pixels.
    with Image.open(BytesIO(data), formats=[fmt]) as probe:
        width, height = probe.size
        _check_pixels(width, height, max_pixels)
        _check_plausible(width, height, policy)
        if fmt == "JPEG":
            _check_jpeg_colour(probe, policy)
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
        raise _reject_corrupt("PNG", "its pixel data cannot be decoded")
    return Image.fromarray(pixels)


def _png_end(data: bytes) -> int | None:
    """The offset just after the IEND chunk, walking the chunks; None without one."""
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return pos if pos <= len(data) else None
    return None


# The marker that ends entropy-coded data: 0xFF (any fill bytes) then a byte that is not a
# stuffed zero, a restart marker (RST0-7) or more fill.
_JPEG_MARKER_AFTER_SCAN = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")


def _jpeg_end(data: bytes) -> int | None:
    """The offset just after the EOI marker, walking segments and scans; None without one.

    Segments are skipped by their length (so an EXIF thumbnail's own EOI is not taken for the
    end), scans up to their next marker; stray bytes between segments are skipped as libjpeg
    does."""
    pos = 2  # after SOI
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0:
            return None
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= len(data):
            return None
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            return pos
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD8:  # no length field
            continue
        if pos + 2 > len(data):
            return None
        (seg_len,) = struct.unpack_from(">H", data, pos)
        if seg_len < 2:
            return None
        pos += seg_len
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            found = _JPEG_MARKER_AFTER_SCAN.search(data, pos)
            if found is None:
                return None
            pos = found.start()


def _check_ends_at_end_marker(data: bytes, fmt: str) -> None:
    """Refuse bytes after a PNG's IEND or a JPEG's EOI, other than NUL padding (a polyglot)."""
    end = _png_end(data) if fmt == "PNG" else _jpeg_end(data)
    marker = "IEND" if fmt == "PNG" else "end-of-image"
    if end is None:
        raise _reject_corrupt(fmt, f"it has no {marker} marker")
    extra = len(data) - end
    if extra and data.count(b"\x00", end) != extra:
        raise UploadRejected(
            f"The {_FORMAT_NAMES[fmt]} carries {extra:,} bytes of other data after its "
            f"{marker} marker. An X-ray file holds only the image, so it is refused: such a "
            "file can hide a web page or a program. Please export the image again from its "
            "source (a PACS viewer or the modality) and upload the new file.",
            code="trailing_data",
        )


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
        return Image.fromarray(_wide_to_uint8(img))
    try:
        return img.convert("L")
    except ValueError:  # modes with no direct conversion to L (e.g. some YCbCr/LAB variants)
        return img.convert("RGB").convert("L")


# Rows of a 16/32-bit picture scaled at a time: a strip's float copy stays a few megabytes.
_STRIP_PIXELS = 1 << 20


def _wide_to_uint8(img: Image.Image) -> np.ndarray:
    """:func:`_minmax_to_uint8` of a 16- or 32-bit image, a strip of rows at a time, so that
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
        out[top : top + step] = _scale_to_uint8(strip(top), lo, hi)
    return out


def _minmax_to_uint8(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    finite = np.isfinite(arr) if arr.dtype.kind == "f" else None
    if finite is not None and not finite.all():
        arr = np.where(finite, arr, 0)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    return _scale_to_uint8(arr, float(arr.min()), float(arr.max()))


def _scale_to_uint8(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

_DEFLATED_TS = "1.2.840.10008.1.2.1.99"

# Explicit VR with a 4-byte length field (PS3.5 7.1.2).
_LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)

_VIEW_POSITIONS = {
    "PA": "PA",
    "AP": "AP",
    "LL": "LATERAL",
    "RL": "LATERAL",
    "LAT": "LATERAL",
    "LATERAL": "LATERAL",
}

# Header tags worth showing next to the image (keyword order is the display order).
_DISPLAY_TAGS = (
    "Modality",
    "SOPClassUID",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "StationName",
    "StudyDescription",
    "SeriesDescription",
    "SeriesNumber",
    "InstanceNumber",
    "BodyPartExamined",
    "ViewPosition",
    "ImageLaterality",
    "PatientOrientation",
    "PresentationIntentType",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTFunction",
    "RescaleIntercept",
    "RescaleSlope",
    "KVP",
    "ExposureTime",
    "XRayTubeCurrent",
    "Exposure",
    "DistanceSourceToDetector",
    "ContentDate",
    "AcquisitionDate",
    "BurnedInAnnotation",
    "LossyImageCompression",
)
_MAX_TAG_TEXT = 256


def _decode_dicom(
    data: bytes, *, max_bytes: int, max_pixels: int, policy: UploadPolicy | None = None
) -> DecodedImage:
    ts, meta_end = _file_meta_transfer_syntax(data)
    if not ts:
        raise _reject_corrupt(
            "DICOM", "its File Meta Information header has no Transfer Syntax UID"
        )
    if ts == _DEFLATED_TS:
        # Room for the upload itself plus one frame at the pixel limit (16-bit mono: 2 bytes
        # a pixel, 8-bit RGB: 3).
        _check_inflated_size(data[meta_end:], limit=max_bytes + 4 * max_pixels)

    ds = pydicom.dcmread(BytesIO(data))  # never force=True: Part-10 files only
    info = _dicom_info(ds)

    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        sop_class = info.tags.get("SOPClassUID", "")
        what = f" (it is a {sop_class} object)" if sop_class else ""
        raise UploadRejected(
            f"This DICOM file contains no image{what}: it has no Pixel Data, as with a "
            "structured report or a DICOMDIR. Please upload the DICOM image of the X-ray itself.",
            code="dicom_no_pixels",
        )

    rows = _as_int(ds.get("Rows"))
    cols = _as_int(ds.get("Columns"))
    if not rows or not cols:
        raise UploadRejected(
            "The DICOM file has pixel data but no image size (Rows/Columns are missing), so it "
            f"cannot be read. {_RESUBMIT_HINT}",
            code="corrupt",
        )
    # Only the first frame is decoded (below), so one frame's size is what costs memory.
    _check_pixels(cols, rows, max_pixels)
    _check_plausible(cols, rows, policy)

    tsuid = UID(str(ds.file_meta.get("TransferSyntaxUID") or ts))
    if not tsuid.is_transfer_syntax:
        raise _reject_dicom_unsupported(str(tsuid), "not a known transfer syntax")
    if tsuid.is_compressed and "PixelData" in ds:
        _check_decoder_available(tsuid)
        _check_compressed_frame_header(ds, rows=rows, cols=cols, max_pixels=max_pixels)

    try:
        arr = pydicom.pixels.pixel_array(ds, index=0)
    except NotImplementedError as exc:
        raise _reject_dicom_unsupported(str(tsuid), _describe(exc)[:160]) from exc

    gray = Image.fromarray(_dicom_to_uint8(arr, ds, info.photometric_interpretation))
    bits = f" {info.bits_stored}-bit" if info.bits_stored else ""
    return DecodedImage(
        format="DICOM",
        image=gray,
        width=gray.width,
        height=gray.height,
        source_mode=f"{info.photometric_interpretation or 'DICOM'}{bits}",
        dicom=info,
    )


def _file_meta_transfer_syntax(data: bytes) -> tuple[str, int]:
    """Read (0002,0010) Transfer Syntax UID from the Part-10 file meta group ourselves.

    Returns ``(uid, offset of the first byte after group 0002)``; ``("", 132)`` if absent.
    Needed before pydicom inflates a deflated data set in one unbounded ``zlib.decompress``.
    The file meta group is always Explicit VR Little Endian (PS3.10 7.1).
    """
    pos = DICOM_PREAMBLE_LENGTH + len(DICOM_MAGIC)
    ts = ""
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = bytes(data[pos + 4 : pos + 6])
        if vr in _LONG_LENGTH_VRS:
            if pos + 12 > len(data):
                break
            (length,) = struct.unpack_from("<I", data, pos + 8)
            value_at = pos + 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            value_at = pos + 8
        if element == 0x0010:
            raw = bytes(data[value_at : value_at + length])
            ts = raw.rstrip(b"\x00 ").decode("ascii", "replace").strip()
        pos = value_at + length
    return ts, pos


def _check_inflated_size(payload: bytes, *, limit: int) -> None:
    """Refuse a deflated DICOM data set that inflates to more than ``limit`` bytes.

    Inflates in 1 MiB steps and throws the output away, so the check itself uses little memory.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending = payload
    total = 0
    try:
        while pending and total <= limit:
            total += len(inflater.decompress(pending, _MB))
            pending = inflater.unconsumed_tail
        if total <= limit:
            # flush() inflates whatever input is left in one go: only once none is left.
            total += len(inflater.flush())
    except zlib.error as exc:
        raise _reject_corrupt("DICOM", f"deflate error: {exc}") from exc
    if total > limit:
        raise UploadRejected(
            "This DICOM file is deflate-compressed and expands to more than "
            f"{_mb(limit)}, which is over what we accept. Please export it uncompressed "
            "(Explicit VR Little Endian) and upload it again.",
            code="too_large",
        )


def _check_decoder_available(tsuid: UID) -> None:
    try:
        decoder = pydicom.pixels.get_decoder(tsuid)
    except NotImplementedError as exc:
        raise _reject_dicom_unsupported(str(tsuid)) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise _reject_dicom_unsupported(str(tsuid), f"no decoder installed: {missing}"[:200])


def _check_compressed_frame_header(ds: Any, *, rows: int, cols: int, max_pixels: int) -> None:
    """Check the first compressed frame's own declared size before decoding it.

    The decoders (openjpeg, libjpeg, Pillow) size their buffers from the codestream header,
    not from Rows/Columns, so a small DICOM header could wrap a huge codestream.
    """
    fragments = pydicom.encaps.generate_fragments(ds.PixelData)
    next(fragments, None)  # the Basic Offset Table item (may be empty)
    first = next(fragments, None)
    if not first:
        raise _reject_corrupt("DICOM", "the compressed pixel data holds no frames")
    declared = _declared_codestream_size(first)
    if declared is None:
        return
    width, height = declared
    _check_pixels(width, height, max_pixels)
    if (width, height) != (cols, rows):
        raise _reject_corrupt(
            "DICOM",
            f"the compressed image is {width} x {height} pixels but the header says "
            f"{cols} x {rows}",
        )


# JPEG start-of-frame markers: SOF0-3, 5-7, 9-11, 13-15, and JPEG-LS SOF55.
_JPEG_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
)


def _declared_codestream_size(fragment: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG 2000 SIZ or a JPEG/JPEG-LS SOF header, else None."""
    j2k = fragment.find(b"\xff\x4f\xff\x51", 0, 65536)  # SOC + SIZ (bare or inside a JP2 box)
    if j2k >= 0 and j2k + 24 <= len(fragment):
        xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", fragment, j2k + 8)
        return xsiz - xosiz, ysiz - yosiz
    return _jpeg_declared_size(fragment)


def _jpeg_declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first JPEG start-of-frame marker, walking the segments."""
    if not data.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker in _JPEG_SOF_MARKERS:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return (width, height) if height else None  # height 0: defined later by DNL
        if marker == 0xDA:  # start of scan before any frame header
            return None
        (seg_len,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + seg_len
    return None


def _png_declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the PNG IHDR chunk, which must come first."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return width, height


def _dicom_to_uint8(arr: np.ndarray, ds: Any, photometric: str) -> np.ndarray:
    """First-frame pixels -> display values 0..255 (air black, as MONOCHROME2)."""
    if photometric == "PALETTE COLOR":
        arr = pydicom.pixels.apply_color_lut(arr, ds)
    if arr.ndim == 3:
        # Colour (pydicom already converted YBR to RGB): luminance, then 0..255.
        rgb = arr[..., :3]
        if rgb.dtype == np.uint8:
            return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"))
        luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return _minmax_to_uint8(luma)
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
            return _scale_to_uint8(out, float(bounds.min()), float(bounds.max()))
    except Exception:  # noqa: BLE001 - display hint only
        logger.info("ignoring unusable VOI LUT/window in DICOM upload", exc_info=True)
    return _minmax_to_uint8(values)


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
    return _scale_to_uint8(out, float(lut.min()), float(lut.max()))


def _dicom_info(ds: Any) -> DicomInfo:
    photometric = _text(ds, "PhotometricInterpretation").upper()
    sex = _text(ds, "PatientSex").upper()
    return DicomInfo(
        patient_id=_identifier_text(ds, "PatientID"),
        patient_name=_person_name(ds),
        patient_sex=sex if sex in ("M", "F", "O") else "",
        patient_birth_date=_parse_da(_text(ds, "PatientBirthDate")),
        accession_number=_identifier_text(ds, "AccessionNumber"),
        study_date=_parse_da(_text(ds, "StudyDate")),
        study_description=_text(ds, "StudyDescription"),
        view_position=_VIEW_POSITIONS.get(_text(ds, "ViewPosition").upper(), ""),
        modality=_text(ds, "Modality").upper(),
        body_part=_text(ds, "BodyPartExamined"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        photometric_interpretation=photometric,
        bits_stored=_as_int(_get(ds, "BitsStored")),
        tags=_display_tags(ds),
    )


def _get(ds: Any, keyword: str) -> Any:
    """ds.<keyword> or None; a value pydicom cannot parse counts as absent."""
    try:
        return ds.get(keyword)
    except Exception:  # noqa: BLE001 - one bad header value must not reject the image
        logger.info("unreadable DICOM element %s", keyword, exc_info=True)
        return None


def _text(ds: Any, keyword: str) -> str:
    value = _get(ds, keyword)
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return ""
    if isinstance(value, Sequence):
        return ""
    if isinstance(value, list | tuple | MultiValue):
        value = value[0] if len(value) else ""
    return _clean(str(value))


def _identifier_text(ds: Any, keyword: str) -> str:
    """An identifier tag as the file holds it, only its padding trimmed: nothing removed or cut,
    so that the upload refuses a control character or an overlong ID instead of storing another."""
    value = _get(ds, keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple | MultiValue):
        value = "\\".join(str(v) for v in value)
    return str(value).strip(" \x00")


def _clean(text: str) -> str:
    return text.replace("\x00", "").strip()[:_MAX_TAG_TEXT]


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _person_name(ds: Any) -> str:
    """PatientName as "Family Given Middle" (DICOM stores "Family^Given^Middle^Prefix^Suffix").

    Only the padding (spaces, NULs) at the ends of each part is trimmed: a NUL, line break or
    other control character inside stays, so that the upload refuses the name instead of storing
    another one (nor is a long name cut here)."""
    pn = _get(ds, "PatientName")
    if pn is None:
        return ""
    try:
        parts = [str(p).strip(_NAME_PADDING) for p in (pn.family_name, pn.given_name,
                                                         pn.middle_name)]
        name = " ".join(p for p in parts if p)
    except Exception:  # noqa: BLE001 - fall back to the raw text
        name = ""
    if not name:
        # e.g. a name given only in its ideographic/phonetic groups ("=..."): show the raw text.
        raw = str(pn).replace("^", " ").replace("=", " ").strip(_NAME_PADDING)
        name = " ".join(p for p in raw.split(" ") if p)
    return name


_NAME_PADDING = " \x00"


def _parse_da(value: str) -> datetime.date | None:
    """A DICOM DA value (YYYYMMDD, or the old YYYY.MM.DD) as a date; anything else -> None."""
    text = value.strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _uid_display(uid: str) -> str:
    name = UID(uid).name
    return f"{name} ({uid})" if name and name != uid else uid


def _display_tags(ds: Any) -> dict[str, str]:
    tags: dict[str, str] = {}
    file_meta = getattr(ds, "file_meta", None)
    ts = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if ts:
        tags["TransferSyntaxUID"] = _uid_display(str(ts))
    for keyword in _DISPLAY_TAGS:
        value = _get(ds, keyword)
        text = _display_value(value)
        if text:
            tags[keyword] = text
    return tags


def _display_value(value: Any) -> str:
    if value is None or isinstance(value, bytes | bytearray | Sequence):
        return ""
    if isinstance(value, UID):
        return _clean(value.name or str(value))
    if isinstance(value, list | tuple | MultiValue):
        return _clean(", ".join(_display_value(v) for v in value))
    return _clean(str(value))


def read_dicom_header(data: bytes) -> DicomInfo:
    """Patient and study fields of a DICOM file, without decoding pixels.

    Works on the first part of a file too (the browser sends the first megabyte to fill the upload
    form). Raises UploadRejected when the bytes are not a Part-10 DICOM file.
    """
    if sniff_format(data) != "DICOM":
        raise _make_rejection("This is not a DICOM (Part-10) file.", "unsupported_format")
    ts, _ = _file_meta_transfer_syntax(data)
    if ts == _DEFLATED_TS:
        # pydicom inflates the whole data set in one call: not on a preview of unknown size.
        return DicomInfo()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, defer_size=1024)
            return _dicom_info(ds)
    except Exception as exc:  # noqa: BLE001 - a cut-off file may end anywhere
        raise _reject_corrupt("DICOM", _describe(exc)) from exc
