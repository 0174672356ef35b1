"""sniff_format: the content decides the format, never the name."""

from __future__ import annotations

import pytest

from tests import imagegen
from tests.training.ml.imaging.decoding import (
    rejection,
)
from training.ml.imaging import sniff_format


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (imagegen.png_bytes(), "PNG"),
        (imagegen.png16_bytes(), "PNG"),
        (imagegen.jpeg_bytes(), "JPEG"),
        (imagegen.dicom_bytes(), "DICOM"),
        (imagegen.text_named_png(), None),
        (imagegen.empty_bytes(), None),
        (b"GIF89a" + b"\x00" * 200, None),
    ],
    ids=["png", "png16", "jpeg", "dicom", "text", "empty", "gif"],
)
def test_sniff_format_tells_the_kind_from_the_content(data: bytes, expected: str | None) -> None:
    assert sniff_format(data) == expected


def test_sniff_format_refuses_a_dicom_data_set_without_the_part10_preamble() -> None:
    without_preamble = imagegen.dicom_bytes()[132:]
    assert sniff_format(without_preamble) is None
    error = rejection(without_preamble)
    assert error.code == "unsupported_format"
    assert "Part-10" in str(error)
