"""Upload decoding: what we refuse (and why), and the test images themselves."""

from __future__ import annotations

import pickle
import warnings
from io import BytesIO

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile

from tests import imagegen
from tests.training.ml.imaging.decoding import (
    decode,
    rejection,
)
from training.ml import imaging
from training.ml.imaging import UploadRejected


def test_it_rejects_an_empty_file() -> None:
    error = rejection(imagegen.empty_bytes())
    assert error.code == "empty"
    assert "empty" in str(error)


def test_it_rejects_a_file_over_max_bytes_saying_size_and_limit_in_mb() -> None:
    data = imagegen.png_bytes(imagegen.make_xray(512, 512))
    assert len(data) > 100_000
    error = rejection(data, max_bytes=100_000)
    assert error.code == "too_large"
    assert "MB" in str(error)
    assert f"{len(data):,} bytes" in str(error)
    assert "0.10 MB" in str(error)  # the limit


def test_a_file_exactly_at_max_bytes_is_accepted() -> None:
    data = imagegen.png_bytes()
    assert decode(data, max_bytes=len(data)).format == "PNG"


def test_it_rejects_text_named_png_because_content_decides() -> None:
    error = rejection(imagegen.text_named_png())
    assert error.code == "unsupported_format"
    message = str(error)
    assert "PNG, JPEG and DICOM" in message
    assert "content" in message and "not its name" in message


def test_it_says_what_an_unsupported_image_looks_like() -> None:
    buf = BytesIO()
    imagegen.make_xray(16, 16).save(buf, format="TIFF")
    error = rejection(buf.getvalue())
    assert error.code == "unsupported_format"
    assert "TIFF" in str(error)


@pytest.mark.parametrize("check_only", [False, True], ids=["decoded", "checked"])
@pytest.mark.parametrize(
    "data",
    [imagegen.truncated_png(), imagegen.truncated_jpeg()],
    ids=["png", "jpeg"],
)
def test_it_rejects_a_truncated_image(data: bytes, check_only: bool) -> None:
    # The upload path checks a grayscale JPEG at an eighth of its size: still every step is read.
    error = rejection(data, check_only=check_only)
    assert error.code == "corrupt"
    assert "truncated" in str(error)


def test_the_upload_path_only_checks_a_jpeg_that_is_its_own_display_copy() -> None:
    data = imagegen.jpeg_bytes(imagegen.make_xray(1200, 900, seed=3))
    checked = decode(data, check_only=True)
    assert checked.image.size == (150, 113)  # an eighth: the decoder's own reduction
    assert checked.original_is_display
    assert (checked.width, checked.height) == (1200, 900)  # the stored size
    with pytest.raises(ValueError, match="reduced"):
        checked.to_png_bytes()


@pytest.mark.parametrize(
    "data",
    [
        imagegen.jpeg_bytes(imagegen.make_xray(1200, 900, mode="RGB")),
        imagegen.jpeg_bytes(imagegen.make_xray(900, 1200), exif_orientation=6),
        imagegen.png_bytes(imagegen.make_xray(1200, 900)),
    ],
    ids=["rgb-jpeg", "turned-jpeg", "png"],
)
def test_a_picture_that_needs_a_display_copy_is_decoded_whole_on_the_upload_path(
    data: bytes,
) -> None:
    decoded = decode(data, check_only=True)
    assert decoded.image.size == (decoded.width, decoded.height) == (1200, 900)
    if decoded.format == "JPEG":
        assert not decoded.original_is_display
        assert decoded.to_png_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("data", "long_side", "size"),
    [
        # A grayscale JPEG: reduced by its decoder by 2, 4 or 8 as far as the long side allows.
        (imagegen.jpeg_bytes(imagegen.make_xray(1200, 900, seed=3)), 300, (300, 225)),
        (imagegen.jpeg_bytes(imagegen.make_xray(1200, 900, seed=3)), 500, (600, 450)),
        (imagegen.jpeg_bytes(imagegen.make_xray(1200, 900, seed=3)), 601, (1200, 900)),
        # Anything else: decoded whole, then reduced by the largest whole factor that fits.
        (imagegen.png_bytes(imagegen.make_xray(1200, 900)), 300, (300, 225)),
        (imagegen.png_bytes(imagegen.make_xray(1200, 900)), 390, (400, 300)),
        (imagegen.jpeg_bytes(imagegen.make_xray(1200, 900, mode="RGB")), 500, (600, 450)),
        (imagegen.dicom_bytes(width=1200, height=900), 500, (600, 450)),
        (imagegen.png_bytes(imagegen.make_xray(1200, 900)), 2000, (1200, 900)),
    ],
    ids=["jpeg-4", "jpeg-2", "jpeg-1", "png-4", "png-3", "rgb-jpeg-2", "dicom-2", "small"],
)
def test_read_for_a_model_an_image_keeps_at_least_the_long_side_asked_for(
    data: bytes, long_side: int, size: tuple[int, int]
) -> None:
    decoded = decode(data, read_long_side=long_side)
    assert decoded.image.mode == "L"
    assert decoded.image.size == size
    assert (decoded.width, decoded.height) == (1200, 900)
    # Reduced by averaging, close to the whole picture shrunk; not a pick of pixels.
    whole = decode(data).image
    shrunk = np.asarray(whole.resize(size, Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(np.asarray(decoded.image, dtype=np.float32) - shrunk).mean() < 1.5


def test_it_rejects_a_png_whose_checksum_is_wrong() -> None:
    data = bytearray(imagegen.png_bytes())
    data[100] ^= 0xFF  # inside the first IDAT chunk
    error = rejection(bytes(data))
    assert error.code == "corrupt"
    assert "damaged" in str(error)


def test_it_rejects_a_png_bomb_with_its_dimensions(pixel_decoding_forbidden: None) -> None:
    bomb = imagegen.bomb_png(30000, 30000)
    assert len(bomb) < 500
    error = rejection(bomb)
    assert error.code == "too_many_pixels"
    assert "30000 x 30000" in str(error)


def test_pillows_own_bomb_guard_still_holds_when_our_limit_is_huge() -> None:
    error = rejection(imagegen.bomb_png(60000, 60000), max_pixels=10**12)
    assert error.code == "too_many_pixels"
    assert "decompression bomb" in str(error)


@pytest.mark.parametrize("kind", ["png", "jpeg", "dicom"])
def test_it_rejects_dimensions_over_max_pixels_before_decoding(
    kind: str, pixel_decoding_forbidden: None
) -> None:
    data = {
        "png": lambda: imagegen.png_bytes(imagegen.make_xray(100, 50)),
        "jpeg": lambda: imagegen.jpeg_bytes(imagegen.make_xray(100, 50)),
        "dicom": lambda: imagegen.dicom_bytes(width=100, height=50),
    }[kind]()
    error = rejection(data, max_pixels=4999)
    assert error.code == "too_many_pixels"
    assert "100 x 50" in str(error)
    assert "4,999" in str(error)


def test_an_image_exactly_at_max_pixels_is_accepted() -> None:
    assert decode(imagegen.png_bytes(imagegen.make_xray(100, 50)), max_pixels=5000).width == 100


def test_decoding_leaves_pillows_global_state_and_warning_filters_alone() -> None:
    max_pixels_before = Image.MAX_IMAGE_PIXELS
    filters_before = list(warnings.filters)

    decode(imagegen.png_bytes())
    rejection(imagegen.bomb_png())
    decode(imagegen.dicom_bytes())

    assert Image.MAX_IMAGE_PIXELS == max_pixels_before
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert warnings.filters == filters_before


def test_upload_rejected_is_a_value_error_with_a_code_that_survives_pickling() -> None:
    error = UploadRejected("The file is empty.", code="empty")
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, ValueError)
    assert (again.code, str(again)) == ("empty", "The file is empty.")


@pytest.mark.parametrize(
    "data",
    [
        imagegen.empty_bytes(),
        imagegen.text_named_png(),
        imagegen.truncated_png(),
        imagegen.truncated_jpeg(),
        imagegen.bomb_png(),
        imagegen.dicom_bytes(with_pixels=False),
        imagegen.dicom_unsupported_syntax_bytes(),
    ],
    ids=["empty", "text", "truncated-png", "truncated-jpeg", "bomb", "sr", "mpeg2"],
)
def test_every_rejection_uses_a_documented_code_and_a_full_sentence(data: bytes) -> None:
    error = rejection(data)
    assert error.code in imaging.REJECTION_CODES
    assert str(error).endswith(".") and len(str(error)) > 40


def test_make_xray_is_deterministic_and_looks_like_a_chest() -> None:
    a = np.asarray(imagegen.make_xray(128, 128, seed=3), dtype=float)
    assert np.array_equal(a, np.asarray(imagegen.make_xray(128, 128, seed=3)))
    assert not np.array_equal(a, np.asarray(imagegen.make_xray(128, 128, seed=4)))
    air, lung, mediastinum = a[2:10, 2:10].mean(), a[60:70, 35:45].mean(), a[40:60, 62:66].mean()
    assert air < lung < mediastinum


def test_dicom_bytes_is_a_standard_part10_file() -> None:
    data = imagegen.dicom_bytes()
    assert data[128:132] == b"DICM"
    ds = pydicom.dcmread(BytesIO(data))  # no force=True
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert imagegen.dicom_bytes() == data  # deterministic
    assert imagegen.dicom_bytes(accession="ACC-002") != data
