"""Upload decoding: what we accept, how it looks afterwards, and what we refuse (and why)."""

from __future__ import annotations

import datetime
import json
import pickle
import subprocess
import sys
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from diagnosis import imaging
from diagnosis.imaging import DecodedImage, UploadRejected, decode_upload, sniff_format
from tests import imagegen

REPO_ROOT = Path(__file__).resolve().parents[2]
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


@pytest.fixture
def pixel_decoding_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to decode pixels blow up, to prove a check ran before decoding.

    The boundary in decode_upload turns unexpected errors into "corrupt", so a test that still
    sees its specific code knows decoding was never attempted.
    """

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    monkeypatch.setattr(imaging.pydicom.pixels, "pixel_array", forbidden)


# --------------------------------------------------------------------------------------------
# sniff_format
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# PNG and JPEG that we accept
# --------------------------------------------------------------------------------------------


def test_a_png_decodes_as_png_whatever_it_is_called() -> None:
    original = imagegen.make_xray(64, 48)
    decoded = decode(imagegen.png_bytes(original))
    assert decoded.format == "PNG"
    assert (decoded.width, decoded.height) == (64, 48)
    assert decoded.source_mode == "L"
    assert decoded.dicom is None
    assert np.array_equal(pixels(decoded), np.asarray(original))


def test_a_jpeg_named_png_decodes_as_jpeg_because_content_decides() -> None:
    decoded = decode(imagegen.jpeg_bytes())
    assert decoded.format == "JPEG"
    assert decoded.image.mode == "L"


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_colour_pngs_become_the_same_grayscale(mode: str) -> None:
    original = imagegen.make_xray(64, 64)
    decoded = decode(imagegen.png_bytes(original.convert(mode)))
    assert decoded.source_mode == mode
    assert np.array_equal(pixels(decoded), np.asarray(original))


@pytest.mark.parametrize("mode", ["P", "1"])
def test_palette_and_bilevel_pngs_become_grayscale(mode: str) -> None:
    decoded = decode(imagegen.png_bytes(mode=mode, width=40, height=30))
    assert decoded.source_mode == mode
    assert pixels(decoded).shape == (30, 40)


def test_a_jpeg_with_exif_orientation_6_comes_out_rotated() -> None:
    original = imagegen.make_xray(200, 100)
    original.paste(255, (0, 0, 40, 20))  # a white block top-left of the stored pixels
    decoded = decode(imagegen.jpeg_bytes(original, exif_orientation=6))

    assert (decoded.width, decoded.height) == (100, 200)
    # Orientation 6 means "rotate 90 degrees clockwise to display": top-left goes top-right.
    shown = pixels(decoded).astype(int)
    assert shown[:40, -20:].mean() > 240
    assert shown[:40, :20].mean() < 200
    expected = np.asarray(original.transpose(Image.Transpose.ROTATE_270), dtype=int)
    assert np.abs(shown - expected).mean() < 3  # JPEG is lossy, but barely at quality 90


def test_a_jpeg_without_exif_orientation_keeps_its_shape() -> None:
    decoded = decode(imagegen.jpeg_bytes(imagegen.make_xray(200, 100)))
    assert (decoded.width, decoded.height) == (200, 100)


def test_a_16_bit_png_is_stretched_to_the_full_8_bit_range() -> None:
    data = imagegen.png16_bytes(64, 32, lo=1000, hi=40000)
    with Image.open(BytesIO(data)) as raw:
        values16 = np.asarray(raw).astype(int)
    decoded = decode(data)

    assert decoded.source_mode.startswith("I;16")
    out = pixels(decoded)
    assert out.min() == 0 and out.max() == 255
    assert out.flat[values16.argmin()] == 0 and out.flat[values16.argmax()] == 255
    # Order of brightness is kept (a linear map, not clipping at 255 as convert("L") does).
    expected = np.rint((values16 - 1000) * 255 / (40000 - 1000))
    assert np.abs(out - expected).max() <= 1


def test_a_flat_16_bit_png_becomes_black_without_dividing_by_zero() -> None:
    flat = Image.fromarray(np.full((8, 8), 5000, dtype=np.uint16))
    decoded = decode(imagegen.png_bytes(flat))
    assert not pixels(decoded).any()


def test_to_png_bytes_round_trips_to_the_same_pixels() -> None:
    decoded = decode(imagegen.jpeg_bytes(imagegen.make_xray(80, 60), exif_orientation=6))
    png = decoded.to_png_bytes()
    assert sniff_format(png) == "PNG"
    with Image.open(BytesIO(png)) as again:
        assert again.mode == "L"
        assert np.array_equal(np.asarray(again), pixels(decoded))


# --------------------------------------------------------------------------------------------
# What we refuse, and what we say
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------


def test_it_fills_dicom_info_from_the_tags() -> None:
    decoded = decode(
        imagegen.dicom_bytes(
            patient_id="MRN-042",
            patient_name="Doe^Jane^Q",
            sex="F",
            birth_date="19700102",
            accession="ACC-042",
            study_date="20260131",
            view="PA",
        )
    )
    info = decoded.dicom
    assert decoded.format == "DICOM"
    assert info is not None
    assert info.patient_id == "MRN-042"
    assert info.patient_name == "Doe Jane Q"
    assert info.patient_sex == "F"
    assert info.patient_birth_date == datetime.date(1970, 1, 2)
    assert info.accession_number == "ACC-042"
    assert info.study_date == datetime.date(2026, 1, 31)
    assert info.view_position == "PA"
    assert info.modality == "DX"
    assert info.body_part == "CHEST"
    assert info.photometric_interpretation == "MONOCHROME2"
    assert info.bits_stored == 12
    assert info.study_instance_uid and info.series_instance_uid and info.sop_instance_uid
    assert decoded.source_mode == "MONOCHROME2 12-bit"


def test_dicom_tags_for_display_are_json_safe_and_hold_no_pixel_data() -> None:
    info = decode(imagegen.dicom_bytes(window=(2048, 4096))).dicom
    assert info is not None
    assert info.tags["Modality"] == "DX"
    assert info.tags["WindowCenter"] == "2048.0"
    assert "Explicit VR Little Endian" in info.tags["TransferSyntaxUID"]
    assert "PixelData" not in info.tags
    assert all(isinstance(v, str) and len(v) <= 256 for v in info.tags.values())
    as_json = json.loads(json.dumps(info.as_dict()))
    assert as_json["patient_birth_date"] == "1970-01-01"


@pytest.mark.parametrize(
    ("tag_value", "expected"),
    [
        ("PA", "PA"),
        ("AP", "AP"),
        ("LL", "LATERAL"),
        ("RL", "LATERAL"),
        ("LAT", "LATERAL"),
        ("", ""),
        ("OBLIQUE", ""),
    ],
)
def test_view_position_is_normalised(tag_value: str, expected: str) -> None:
    info = decode(imagegen.dicom_bytes(view=tag_value, width=16, height=16)).dicom
    assert info is not None and info.view_position == expected


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA:UserWarning")  # from writing them
def test_bad_dicom_dates_and_sex_become_empty_instead_of_failing() -> None:
    info = decode(imagegen.dicom_bytes(birth_date="19701399", study_date="2026-1", sex="X")).dicom
    assert info is not None
    assert info.patient_birth_date is None
    assert info.study_date is None
    assert info.patient_sex == ""


def test_monochrome1_is_inverted_relative_to_the_same_pixels_as_monochrome2() -> None:
    mono2 = pixels(decode(imagegen.dicom_bytes(photometric="MONOCHROME2")))
    mono1 = pixels(decode(imagegen.dicom_bytes(photometric="MONOCHROME1")))
    assert np.array_equal(mono1, 255 - mono2)
    # The air in the corner is black in MONOCHROME2, so white in MONOCHROME1 with that data.
    assert mono2[0, 0] < 50 and mono1[0, 0] > 205


def test_without_a_window_the_data_range_maps_to_0_255() -> None:
    data = imagegen.dicom_bytes(bits=12)
    stored = stored_values(data).astype(int)
    out = pixels(decode(data)).astype(int)
    assert out.min() == 0 and out.max() == 255
    expected = np.rint((stored - stored.min()) * 255 / (stored.max() - stored.min()))
    assert np.abs(out - expected).max() <= 1


def test_a_window_narrower_than_the_data_clips_to_black_and_white() -> None:
    data = imagegen.dicom_bytes(bits=12, window=(2048, 1000))
    stored = stored_values(data)
    out = pixels(decode(data))
    below, above = stored < 1548, stored > 2548
    assert below.any() and above.any()
    assert (out[below] == 0).all()
    assert (out[above] == 255).all()
    inside = out[~below & ~above]
    assert 0 < np.median(inside) < 255


def test_a_window_wider_than_the_data_is_not_stretched() -> None:
    out = pixels(decode(imagegen.dicom_bytes(bits=12, window=(2048, 40000))))
    # The 12-bit data covers ~10% of the window, so it stays a narrow band of grey.
    assert 100 < out.min() <= out.max() < 155


def test_monochrome1_with_a_window_inverts_after_windowing() -> None:
    window = (2048, 1000)
    stored = stored_values(imagegen.dicom_bytes(window=window))
    out = pixels(decode(imagegen.dicom_bytes(window=window, photometric="MONOCHROME1")))
    assert (out[stored < 1548] == 255).all()
    assert (out[stored > 2548] == 0).all()


def test_an_8_bit_voi_lut_with_more_than_256_entries_is_applied() -> None:
    # pydicom 3.0.2's apply_voi wraps every input above 255 for 8-bit LUT entries.
    ds = pydicom.dcmread(BytesIO(imagegen.dicom_bytes(bits=12)))
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 8])  # LUT Descriptor: entries, first, bits
    item.add_new(0x00283006, "US", [0 if i < 2048 else 255 for i in range(4096)])  # LUT Data
    ds.VOILUTSequence = [item]
    out = pixels(decode(resave(ds)))
    stored = ds.pixel_array
    assert set(np.unique(out)) == {0, 255}
    assert (out[stored < 2048] == 0).all() and (out[stored >= 2048] == 255).all()


def test_an_unusable_window_falls_back_to_the_data_range() -> None:
    ds = pydicom.dcmread(BytesIO(imagegen.dicom_bytes(window=(2048, 0))))  # width must be >= 1
    out = pixels(decode(resave(ds)))
    assert out.min() == 0 and out.max() == 255


def test_an_rgb_dicom_becomes_grayscale() -> None:
    decoded = decode(imagegen.dicom_bytes(rgb=True, width=40, height=30))
    assert decoded.source_mode == "RGB 8-bit"
    out = pixels(decoded)
    assert out.shape == (30, 40)
    assert out.std() > 5


@pytest.mark.parametrize(
    "transfer_syntax",
    [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless, JPEG2000Lossless],
    ids=["implicit", "deflated", "rle", "jpeg2000"],
)
def test_lossless_dicom_encodings_decode_to_the_same_pixels(transfer_syntax: str) -> None:
    reference = pixels(decode(imagegen.dicom_bytes(width=64, height=48)))
    data = imagegen.dicom_bytes(width=64, height=48, transfer_syntax=transfer_syntax)
    assert pydicom.dcmread(BytesIO(data)).file_meta.TransferSyntaxUID == transfer_syntax
    assert np.array_equal(pixels(decode(data)), reference)


def test_a_jpeg_baseline_dicom_decodes() -> None:
    decoded = decode(imagegen.dicom_bytes(bits=8, transfer_syntax=JPEGBaseline8Bit))
    reference = pixels(decode(imagegen.dicom_bytes(bits=8)))
    assert np.abs(pixels(decoded).astype(int) - reference).mean() < 3


def test_only_the_first_frame_of_a_multiframe_dicom_is_used() -> None:
    single = pixels(decode(imagegen.dicom_bytes(width=32, height=32)))
    multi = pixels(decode(imagegen.dicom_bytes(width=32, height=32, frames=3)))
    assert np.array_equal(multi, single)


def test_it_rejects_a_dicom_without_pixel_data() -> None:
    error = rejection(imagegen.dicom_bytes(with_pixels=False))
    assert error.code == "dicom_no_pixels"
    assert "no image" in str(error)


def test_it_rejects_a_dicom_compression_it_cannot_decode() -> None:
    error = rejection(imagegen.dicom_unsupported_syntax_bytes())
    assert error.code == "dicom_unsupported"
    assert "MPEG2" in str(error)


def test_it_rejects_a_truncated_dicom() -> None:
    data = imagegen.dicom_bytes()
    error = rejection(data[: len(data) * 6 // 10])
    assert error.code == "corrupt"
    assert "damaged or incomplete" in str(error)


def test_it_rejects_a_dicom_marker_with_no_file_meta() -> None:
    error = rejection(b"\x00" * 128 + b"DICM" + b"\x13\x37" * 100)
    assert error.code == "corrupt"
    assert "Transfer Syntax" in str(error)


def test_it_rejects_a_deflated_dicom_that_inflates_past_the_limits() -> None:
    bomb = imagegen.deflated_dicom_bomb(inflated_mb=16)
    assert len(bomb) < 100_000
    error = rejection(bomb, max_bytes=1_000_000, max_pixels=1_000_000)
    assert error.code == "too_large"
    assert "deflate" in str(error)


def test_it_checks_a_compressed_frames_own_size_before_decoding(
    pixel_decoding_forbidden: None,
) -> None:
    ds = pydicom.dcmread(
        BytesIO(imagegen.dicom_bytes(width=512, height=512, transfer_syntax=JPEG2000Lossless))
    )
    ds.Rows, ds.Columns = 64, 64  # the header lies: the codestream is 512 x 512
    error = rejection(resave(ds), max_pixels=100_000)
    assert error.code == "too_many_pixels"
    assert "512 x 512" in str(error)


def test_it_rejects_a_compressed_frame_that_disagrees_with_the_header() -> None:
    ds = pydicom.dcmread(
        BytesIO(imagegen.dicom_bytes(width=128, height=96, transfer_syntax=JPEG2000Lossless))
    )
    ds.Rows = 64
    error = rejection(resave(ds))
    assert error.code == "corrupt"
    assert "128 x 96" in str(error)


# --------------------------------------------------------------------------------------------
# The test images themselves, and the request-path import boundary
# --------------------------------------------------------------------------------------------


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


def test_the_request_path_module_imports_neither_django_nor_torch() -> None:
    code = (
        "import sys, diagnosis.imaging\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'django', 'torch', 'torchvision'})\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_png_bytes_keeps_every_pixel_and_the_channel_order(mode):
    from training.ml.infer.render import png_bytes

    rng = np.random.default_rng(3)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(37, 53, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels)
    data = png_bytes(image)
    assert data.startswith(b"\x89PNG")
    with Image.open(BytesIO(data)) as decoded:
        assert decoded.mode == mode and decoded.size == (53, 37)
        assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_png_bytes_refuses_modes_it_cannot_write_faithfully():
    from training.ml.infer.render import png_bytes

    with pytest.raises(ValueError, match="L, RGB or RGBA"):
        png_bytes(Image.new("I;16", (4, 4)))


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (64, 48), (300, 257)])
def test_the_display_png_writer_round_trips_exactly(shape):
    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    pixels[:, : shape[1] // 2] = np.arange(shape[1] // 2, dtype=np.uint8)  # some runs, too
    for channels, mode in ((1, "L"), (3, "RGB"), (4, "RGBA")):
        picture = pixels if channels == 1 else np.stack(
            [np.roll(pixels, k, axis=1) for k in range(channels)], axis=2)
        data = imaging.png_uint8(picture)
        with Image.open(BytesIO(data)) as probe:
            probe.verify()  # chunk CRCs and structure
        with Image.open(BytesIO(data)) as shown:
            assert (shown.format, shown.mode, shown.size) == ("PNG", mode, shape[::-1])
            assert np.array_equal(np.asarray(shown), picture)


def test_the_png_writer_refuses_what_it_cannot_write_faithfully():
    for bad in (np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4), np.uint16),
                np.zeros((0, 4), np.uint8), np.zeros((4, 4, 3, 1), np.uint8)):
        with pytest.raises(ValueError, match="uint8 array"):
            imaging.png_uint8(bad)
