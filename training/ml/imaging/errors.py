"""UploadRejected, the codes it carries, and the sentences a user is shown."""

from __future__ import annotations

from typing import Any

from .dicom_tags import uid_display
from .sniff import guess_other_kind

MB = 1024 * 1024

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

FORMAT_NAMES = {"PNG": "PNG image", "JPEG": "JPEG image", "DICOM": "DICOM file"}

RESUBMIT_HINT = "Please export the image again from its source and upload the new file."


class UploadRejected(ValueError):
    """An upload we refuse. ``str(exc)`` is a user-facing sentence; ``exc.code`` a machine code.

    :func:`decode_upload` raises only the codes in :data:`REJECTION_CODES`; callers (the upload
    service) may raise it with their own codes for their own checks.
    """

    # The file it was about, where a caller that handles several files sets it.
    filename: str | None = None

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the keyword-only ``code`` through pickling (e.g. across processes).
        return (_make_rejection, (self.message, self.code))


def _make_rejection(message: str, code: str) -> UploadRejected:
    return UploadRejected(message, code=code)


def format_mb(n: int) -> str:
    value = n / MB
    return f"{value:.1f} MB" if value >= 1 else f"{value:.2f} MB"


def reject_too_large(size: int, max_bytes: int) -> UploadRejected:
    return UploadRejected(
        f"The file is too large: {format_mb(size)} ({size:,} bytes), over the upload limit of "
        f"{format_mb(max_bytes)}. Please upload a smaller file, for example the image exported at a "
        "lower resolution.",
        code="too_large",
    )


def reject_unsupported(data: bytes) -> UploadRejected:
    kind = guess_other_kind(data)
    found = f"It looks like {kind}. " if kind else ""
    return UploadRejected(
        "This file is not a PNG, JPEG or DICOM image. "
        f"{found}We accept PNG, JPEG and DICOM (Part-10 .dcm) files only, and the file's "
        "content decides, not its name or extension. Please export the X-ray as PNG, JPEG or "
        "DICOM and upload it again.",
        code="unsupported_format",
    )


def reject_too_many_pixels(width: int, height: int, max_pixels: int) -> UploadRejected:
    return UploadRejected(
        f"The image is too big: {width} x {height} pixels ({width * height:,} pixels), over the "
        f"limit of {max_pixels:,} pixels. Please upload a downscaled copy of the image.",
        code="too_many_pixels",
    )


def reject_corrupt(fmt: str, detail: str = "") -> UploadRejected:
    what = FORMAT_NAMES.get(fmt, "file")
    detail = " ".join(detail.split())[:200]
    because = f" ({detail})" if detail else ""
    return UploadRejected(
        f"The {what} is damaged or incomplete (truncated), so it cannot be read{because}. "
        f"{RESUBMIT_HINT}",
        code="corrupt",
    )


def reject_dicom_unsupported(ts: str, reason: str = "") -> UploadRejected:
    name = uid_display(ts) if ts else "an unknown transfer syntax"
    extra = f" ({reason})" if reason else ""
    return UploadRejected(
        f"This DICOM file's pixel data is encoded with {name}, which this server cannot "
        f"decode{extra}. Please export it uncompressed (Explicit VR Little Endian) or with JPEG "
        "or JPEG 2000 compression, or upload a PNG or JPEG export of the image.",
        code="dicom_unsupported",
    )


def describe_exception(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
