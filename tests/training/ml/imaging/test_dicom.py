"""DICOM: the header read into DicomInfo, display values, encodings, what we refuse."""

from __future__ import annotations

import datetime
import json
from io import BytesIO

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from tests import imagegen
from tests.training.ml.imaging.decoding import (
    decode,
    pixels,
    rejection,
    resave,
    stored_values,
)


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
