"""Decode and validate chest X-ray files (PNG, JPEG, DICOM); write 8-bit PNGs. No Django, no torch."""

from __future__ import annotations

from .decode import (
    PNG_SIGNATURE,
    REJECTION_CODES,
    DecodedImage,
    DicomInfo,
    UploadPolicy,
    UploadRejected,
    decode_upload,
    png_uint8,
    read_dicom_header,
    sniff_format,
)

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
