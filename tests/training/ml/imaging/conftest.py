"""Fixtures of the imaging tests."""

from __future__ import annotations

import pydicom.pixels
import pytest
from PIL import ImageFile


@pytest.fixture
def pixel_decoding_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to decode pixels blow up, to prove a check ran before decoding.

    The boundary in decode_upload turns unexpected errors into "corrupt", so a test that still
    sees its specific code knows decoding was never attempted.
    """

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    monkeypatch.setattr(pydicom.pixels, "pixel_array", forbidden)
