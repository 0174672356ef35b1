"""DICOM (Part-10) files: the header and size checks before decoding, then the first frame."""

from __future__ import annotations

import struct
import warnings
import zlib
from io import BytesIO
from typing import Any

import pydicom
import pydicom.encaps
import pydicom.pixels
from PIL import Image
from pydicom.uid import UID

from .decoded import DecodedImage, DicomInfo
from .dicom_pixels import dicom_to_uint8
from .dicom_tags import as_int, dicom_info
from .errors import (
    MB,
    RESUBMIT_HINT,
    UploadRejected,
    describe_exception,
    format_mb,
    reject_corrupt,
    reject_dicom_unsupported,
)
from .policy import UploadPolicy, check_pixels, check_plausible
from .sniff import DICOM_MAGIC, DICOM_PREAMBLE_LENGTH, declared_codestream_size, sniff_format

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

_DEFLATED_TS = "1.2.840.10008.1.2.1.99"

# Explicit VR with a 4-byte length field (PS3.5 7.1.2).
_LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


def decode_dicom(
    data: bytes, *, max_bytes: int, max_pixels: int, policy: UploadPolicy | None = None
) -> DecodedImage:
    ts, meta_end = _file_meta_transfer_syntax(data)
    if not ts:
        raise reject_corrupt("DICOM", "its File Meta Information header has no Transfer Syntax UID")
    if ts == _DEFLATED_TS:
        # Room for the upload itself plus one frame at the pixel limit (16-bit mono: 2 bytes
        # a pixel, 8-bit RGB: 3).
        _check_inflated_size(data[meta_end:], limit=max_bytes + 4 * max_pixels)

    ds = pydicom.dcmread(BytesIO(data))  # never force=True: Part-10 files only
    info = dicom_info(ds)

    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        sop_class = info.tags.get("SOPClassUID", "")
        what = f" (it is a {sop_class} object)" if sop_class else ""
        raise UploadRejected(
            f"This DICOM file contains no image{what}: it has no Pixel Data, as with a "
            "structured report or a DICOMDIR. Please upload the DICOM image of the X-ray itself.",
            code="dicom_no_pixels",
        )

    rows = as_int(ds.get("Rows"))
    cols = as_int(ds.get("Columns"))
    if not rows or not cols:
        raise UploadRejected(
            "The DICOM file has pixel data but no image size (Rows/Columns are missing), so it "
            f"cannot be read. {RESUBMIT_HINT}",
            code="corrupt",
        )
    # Only the first frame is decoded (below), so one frame's size is what costs memory.
    check_pixels(cols, rows, max_pixels)
    check_plausible(cols, rows, policy)

    tsuid = UID(str(ds.file_meta.get("TransferSyntaxUID") or ts))
    if not tsuid.is_transfer_syntax:
        raise reject_dicom_unsupported(str(tsuid), "not a known transfer syntax")
    if tsuid.is_compressed and "PixelData" in ds:
        _check_decoder_available(tsuid)
        _check_compressed_frame_header(ds, rows=rows, cols=cols, max_pixels=max_pixels)

    try:
        arr = pydicom.pixels.pixel_array(ds, index=0)
    except NotImplementedError as exc:
        raise reject_dicom_unsupported(str(tsuid), describe_exception(exc)[:160]) from exc

    gray = Image.fromarray(dicom_to_uint8(arr, ds, info.photometric_interpretation))
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
            total += len(inflater.decompress(pending, MB))
            pending = inflater.unconsumed_tail
        if total <= limit:
            # flush() inflates whatever input is left in one go: only once none is left.
            total += len(inflater.flush())
    except zlib.error as exc:
        raise reject_corrupt("DICOM", f"deflate error: {exc}") from exc
    if total > limit:
        raise UploadRejected(
            "This DICOM file is deflate-compressed and expands to more than "
            f"{format_mb(limit)}, which is over what we accept. Please export it uncompressed "
            "(Explicit VR Little Endian) and upload it again.",
            code="too_large",
        )


def _check_decoder_available(tsuid: UID) -> None:
    try:
        decoder = pydicom.pixels.get_decoder(tsuid)
    except NotImplementedError as exc:
        raise reject_dicom_unsupported(str(tsuid)) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise reject_dicom_unsupported(str(tsuid), f"no decoder installed: {missing}"[:200])


def _check_compressed_frame_header(ds: Any, *, rows: int, cols: int, max_pixels: int) -> None:
    """Check the first compressed frame's own declared size before decoding it.

    The decoders (openjpeg, libjpeg, Pillow) size their buffers from the codestream header,
    not from Rows/Columns, so a small DICOM header could wrap a huge codestream.
    """
    fragments = pydicom.encaps.generate_fragments(ds.PixelData)
    next(fragments, None)  # the Basic Offset Table item (may be empty)
    first = next(fragments, None)
    if not first:
        raise reject_corrupt("DICOM", "the compressed pixel data holds no frames")
    declared = declared_codestream_size(first)
    if declared is None:
        return
    width, height = declared
    check_pixels(width, height, max_pixels)
    if (width, height) != (cols, rows):
        raise reject_corrupt(
            "DICOM",
            f"the compressed image is {width} x {height} pixels but the header says "
            f"{cols} x {rows}",
        )


def read_dicom_header(data: bytes) -> DicomInfo:
    """Patient and study fields of a DICOM file, without decoding pixels.

    Works on the first part of a file too (the browser sends the first megabyte to fill the upload
    form). Raises UploadRejected when the bytes are not a Part-10 DICOM file.
    """
    if sniff_format(data) != "DICOM":
        raise UploadRejected("This is not a DICOM (Part-10) file.", code="unsupported_format")
    ts, _ = _file_meta_transfer_syntax(data)
    if ts == _DEFLATED_TS:
        # pydicom inflates the whole data set in one call: not on a preview of unknown size.
        return DicomInfo()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, defer_size=1024)
            return dicom_info(ds)
    except Exception as exc:  # noqa: BLE001 - a cut-off file may end anywhere
        raise reject_corrupt("DICOM", describe_exception(exc)) from exc
