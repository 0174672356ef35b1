"""Decode and validate chest X-ray files (PNG, JPEG, DICOM); write 8-bit PNGs.

Part of the ML core, and plain Python on purpose: no Django and no torch import, because the
upload view runs this on the web request path, which must never load torch; training reads its
datasets with the same code. Everything a user can upload goes through :func:`decode_upload`,
which either returns an 8-bit grayscale :class:`DecodedImage` or raises :class:`UploadRejected`
with a sentence the view can show as is.

Safety rules (see DESIGN.md, "Pitfalls"):

* the content decides the format (:func:`sniff_format`), never the file name;
* the pixel count is checked before any pixel is decoded, and Pillow's own decompression-bomb
  warning is turned into an error while we decode;
* ``verify()`` then reopen, and never ``ImageFile.LOAD_TRUNCATED_IMAGES``: a truncated file is
  rejected, not silently padded with grey;
* DICOM is read without ``force=True`` (Part-10 files only), a deflated data set is inflated with
  a size bound first, and a compressed frame's own header is checked before it is decoded.

Modules: :mod:`.decode` (the entry point), :mod:`.sniff` (format, declared size and end of a file
from its bytes), :mod:`.policy` (pixel limit and what an upload must also be), :mod:`.raster`
(PNG, JPEG), :mod:`.dicom` with :mod:`.dicom_tags` and :mod:`.dicom_pixels`, :mod:`.intensity`
(any bit depth to 8 bits), :mod:`.png` (the PNG writer), :mod:`.errors` (UploadRejected and its
sentences), :mod:`.decoded` (what decoding returns).
"""

from __future__ import annotations

from .decode import decode_upload
from .decoded import DecodedImage, DicomInfo
from .dicom import read_dicom_header
from .errors import REJECTION_CODES, UploadRejected
from .png import png_uint8
from .policy import UploadPolicy
from .sniff import PNG_SIGNATURE, sniff_format

__all__ = [
    "PNG_SIGNATURE",
    "REJECTION_CODES",
    "DecodedImage",
    "DicomInfo",
    "UploadPolicy",
    "UploadRejected",
    "decode_upload",
    "png_uint8",
    "read_dicom_header",
    "sniff_format",
]
