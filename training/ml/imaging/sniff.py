"""What a file's bytes say before any decoder runs: its format, its declared size, its end."""

from __future__ import annotations

import re
import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
DICOM_PREAMBLE_LENGTH = 128
DICOM_MAGIC = b"DICM"


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


def guess_other_kind(data: bytes) -> str | None:
    for offset, magic, name in _OTHER_SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return name
    # A DICOM data set without the Part-10 preamble usually starts with group 0002 or 0008.
    if data[:2] in (b"\x02\x00", b"\x08\x00") and data[4:6].isalpha():
        return "a DICOM data set without the Part-10 header (128-byte preamble and 'DICM')"
    return None


# JPEG start-of-frame markers: SOF0-3, 5-7, 9-11, 13-15, and JPEG-LS SOF55.
_JPEG_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
)


def declared_codestream_size(fragment: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG 2000 SIZ or a JPEG/JPEG-LS SOF header, else None."""
    j2k = fragment.find(b"\xff\x4f\xff\x51", 0, 65536)  # SOC + SIZ (bare or inside a JP2 box)
    if j2k >= 0 and j2k + 24 <= len(fragment):
        xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", fragment, j2k + 8)
        return xsiz - xosiz, ysiz - yosiz
    return jpeg_declared_size(fragment)


def jpeg_declared_size(data: bytes) -> tuple[int, int] | None:
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


def png_declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the PNG IHDR chunk, which must come first."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return width, height


def png_end(data: bytes) -> int | None:
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


def jpeg_end(data: bytes) -> int | None:
    """The offset just after the EOI marker, walking segments and scans; None without one.

    Segments are skipped by their length (so an EXIF thumbnail's own EOI is not taken for the
    end), scans up to their next marker; stray bytes between segments are skipped as libjpeg
    does."""
    pos = 2  # after SOI
    while True:
        at = _next_marker_code(data, pos)
        if at is None:
            return None
        marker = data[at]
        pos = at + 1
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


def _next_marker_code(data: bytes, pos: int) -> int | None:
    """The offset of the next marker's code byte from ``pos`` on (after any fill bytes), or None."""
    pos = data.find(b"\xff", pos)
    if pos < 0:
        return None
    while pos < len(data) and data[pos] == 0xFF:  # fill bytes before a marker
        pos += 1
    return pos if pos < len(data) else None
