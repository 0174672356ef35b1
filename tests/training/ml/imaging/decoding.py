"""Shared by the imaging tests: decode with test limits, and DICOM round trips."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from training.ml.imaging import DecodedImage, UploadRejected, decode_upload

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000


def decode(data: bytes, **kw: int) -> DecodedImage:
    return decode_upload(
        data,
        max_bytes=kw.get("max_bytes", MAX_BYTES),
        max_pixels=kw.get("max_pixels", MAX_PIXELS),
        read_long_side=kw.get("read_long_side"),
        check_only=bool(kw.get("check_only")),
    )


def rejection(data: bytes, **kw: int) -> UploadRejected:
    with pytest.raises(UploadRejected) as info:
        decode(data, **kw)
    return info.value


def pixels(decoded: DecodedImage) -> np.ndarray:
    assert decoded.image.mode == "L"
    return np.asarray(decoded.image)


def resave(ds: Dataset) -> bytes:
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def stored_values(data: bytes) -> np.ndarray:
    return pydicom.dcmread(BytesIO(data)).pixel_array
