"""Issue #20 item 5: implausible pictures, polyglots, and the memory a large colour PNG costs."""

from __future__ import annotations

import hashlib
import struct
import zlib
from io import BytesIO

import pytest
from PIL import Image

from diagnosis.models import Image as ImageRow
from tests import imagegen
from tests.conftest import run_python
from tests.security.upload_helpers import api_client, post_api, post_form, stored
from training.ml.imaging import PNG_SIGNATURE, UploadPolicy, UploadRejected, decode_upload

POLICY = UploadPolicy(min_side=128, max_aspect_ratio=3)


def _picture(fmt: str, width: int, height: int) -> bytes:
    if fmt == "dicom":
        return imagegen.dicom_bytes(width=width, height=height)
    img = Image.new("L", (width, height), 90)
    return imagegen.png_bytes(img) if fmt == "png" else imagegen.jpeg_bytes(img)


def _decode(data: bytes, policy: UploadPolicy | None = POLICY):
    return decode_upload(
        data, max_bytes=64 << 20, max_pixels=50_000_000, check_only=True, policy=policy
    )


SHAPES = [
    ((1, 1), "too_small"),
    ((20000, 8), "too_small"),
    ((8, 20000), "too_small"),
    ((127, 400), "too_small"),
    ((1200, 300), "bad_aspect_ratio"),
    ((300, 1200), "bad_aspect_ratio"),
]


@pytest.mark.parametrize("fmt", ["png", "jpeg", "dicom"])
@pytest.mark.parametrize(("size", "code"), SHAPES, ids=[f"{w}x{h}" for (w, h), _ in SHAPES])
def test_it_refuses_a_picture_no_chest_x_ray_has(fmt, size, code):
    with pytest.raises(UploadRejected) as refused:
        _decode(_picture(fmt, *size))
    assert refused.value.code == code
    assert f"{size[0]} x {size[1]} pixels" in str(refused.value)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "dicom"])
@pytest.mark.parametrize("size", [(128, 128), (384, 128), (128, 384)])
def test_it_accepts_the_smallest_and_the_longest_plausible_picture(fmt, size):
    assert (_decode(_picture(fmt, *size)).width, _decode(_picture(fmt, *size)).height) == size


def test_training_data_is_not_held_to_the_upload_policy():
    decoded = _decode(_picture("png", 20, 8), policy=None)
    assert (decoded.width, decoded.height) == (20, 8)


@pytest.mark.django_db
def test_the_api_answers_json_400_and_stores_nothing(api_token, settings):
    settings.CXR_MIN_IMAGE_SIDE = 200
    before = stored()
    resp = post_api(api_client(api_token), _picture("png", 150, 150), patient_id="PL-1")
    assert resp.status_code == 400
    assert resp["Content-Type"] == "application/json"
    assert resp.json()["code"] == "too_small" and "at least 200 pixels" in resp.json()["error"]
    assert stored() == before


@pytest.mark.django_db
def test_the_form_shows_the_refusal_beside_the_file(rad_client, settings):
    settings.CXR_MAX_ASPECT_RATIO = 2.0
    resp = post_form(rad_client, _picture("jpeg", 600, 200), patient_id="PL-2")
    assert resp.status_code == 400
    assert "at most 2 times" in resp.content.decode()
    assert stored()["images"] == 0


# --- polyglots ---------------------------------------------------------------------------------

PAYLOADS = [
    b"<html><script>alert(1)</script></html>",
    b"PK\x03\x04" + b"\x00" * 26,
    b"\x00\x00\x00#!/bin/sh\n",
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=["html", "zip", "after-nul"])
@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_it_refuses_bytes_after_the_end_marker(fmt, payload):
    with pytest.raises(UploadRejected) as refused:
        _decode(_picture(fmt, 256, 256) + payload)
    assert refused.value.code == "trailing_data"
    assert f"{len(payload):,} bytes" in str(refused.value)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_nul_padding_after_the_end_marker_is_accepted(fmt):
    assert _decode(_picture(fmt, 256, 256) + b"\x00" * 511).width == 256


@pytest.mark.django_db
def test_a_polyglot_is_neither_stored_nor_served(api_token):
    before = stored()
    resp = post_api(
        api_client(api_token), _picture("png", 256, 256) + PAYLOADS[0], patient_id="PL-3"
    )
    assert resp.status_code == 400 and resp.json()["code"] == "trailing_data"
    assert stored() == before


@pytest.mark.django_db
def test_a_dicom_preamble_carrying_another_file_is_stored_and_served_zeroed(api_token):
    dicom = imagegen.dicom_bytes(width=256, height=256)
    polyglot = (
        b"MZ\x90\x00" + b"This program cannot be run in DOS mode".ljust(124, b"!") + dicom[128:]
    )
    api = api_client(api_token)
    resp = post_api(api, polyglot, name="chest.dcm", patient_id="PL-4")
    assert resp.status_code == 201, resp.content
    image = ImageRow.objects.get(study_id=resp.json()["id"])
    with image.original.open("rb") as fh:
        kept = fh.read()
    assert kept[:128] == bytes(128) and kept[128:] == dicom[128:]
    assert image.sha256 == hashlib.sha256(kept).hexdigest()


def test_a_progressive_jpeg_with_an_exif_thumbnail_ends_where_it_ends():
    """Several scans, and a thumbnail (with its own end marker) inside the EXIF segment."""
    thumb = BytesIO()
    Image.new("L", (64, 64), 40).save(thumb, "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 1
    buf = BytesIO()
    imagegen.make_xray(300, 260).save(
        buf, "JPEG", progressive=True, exif=exif.tobytes() + thumb.getvalue()
    )
    assert _decode(buf.getvalue()).width == 300
    with pytest.raises(UploadRejected, match="after its end-of-image marker"):
        _decode(buf.getvalue() + b"trailer")


def test_a_jpeg_without_its_end_marker_is_refused_as_truncated():
    data = _picture("jpeg", 256, 256)
    with pytest.raises(UploadRejected) as refused:
        _decode(data[:-2])
    assert refused.value.code == "corrupt" and "end-of-image" in str(refused.value)


# --- memory ------------------------------------------------------------------------------------


def _flat_rgba_png(side: int) -> bytes:
    """A side x side RGBA PNG of one colour, compressed row by row (a few hundred KB)."""
    deflate = zlib.compressobj(9)
    row = b"\x00" + b"\x50\x60\x70\xff" * side
    idat = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


MEASURE = """
import resource, sys
from training.ml.imaging import UploadPolicy, decode_upload
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
decoded = decode_upload(data, max_bytes=64 << 20, max_pixels=50_000_000, check_only=True,
                        policy=UploadPolicy(min_side=128, max_aspect_ratio=3))
display = decoded.to_png_bytes()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, decoded.width)
"""


def test_a_small_7000_pixel_rgba_png_is_checked_in_less_than_one_rgba_copy_of_memory(tmp_path):
    """Validated and its grey display copy written: the peak stays below the 196 MB one RGBA
    copy of its pixels would take (Pillow's own decode took ~245 MB)."""
    side = 7000
    path = tmp_path / "big.png"
    path.write_bytes(_flat_rgba_png(side))
    assert path.stat().st_size < 1_000_000
    done = run_python(MEASURE, str(path), timeout=300)
    assert done.returncode == 0, done.stderr
    growth, width = (int(v) for v in done.stdout.split())
    assert width == side
    assert growth < 4 * side * side, f"peak grew by {growth / 2**20:.0f} MB"


# --- colour models no X-ray has ------------------------------------------------------------------


def _cmyk_jpeg(width: int, height: int, *, ycck: bool = False, **save) -> bytes:
    buf = BytesIO()
    Image.new("CMYK", (width, height), (10, 20, 30, 40)).save(buf, "JPEG", **save)
    data = bytearray(buf.getvalue())
    adobe = data.index(b"\xff\xee")  # the APP14 (Adobe) segment
    assert data[adobe + 4 : adobe + 9] == b"Adobe"
    if ycck:  # Adobe's colour transform 2: the four channels are YCCK, not CMYK
        data[adobe + 15] = 2
    return bytes(data)


@pytest.mark.parametrize(("ycck", "kind"), [(False, "CMYK"), (True, "YCCK")])
def test_it_refuses_a_cmyk_or_ycck_jpeg_from_its_header(ycck, kind):
    with pytest.raises(UploadRejected) as refused:
        _decode(_cmyk_jpeg(300, 260, ycck=ycck, progressive=True))
    assert refused.value.code == "unsupported_colour"
    assert f"stored in {kind} colour" in str(refused.value)


def test_training_data_may_still_be_a_cmyk_jpeg():
    decoded = _decode(_cmyk_jpeg(300, 260), policy=None)
    assert (decoded.width, decoded.height, decoded.source_mode) == (300, 260, "CMYK")


@pytest.mark.django_db
def test_a_cmyk_jpeg_is_a_json_400_on_the_api_and_stores_nothing(api_token):
    before = stored()
    resp = post_api(
        api_client(api_token), _cmyk_jpeg(300, 260), name="chest.jpg", patient_id="PL-5"
    )
    assert resp.status_code == 400 and resp["Content-Type"] == "application/json"
    assert resp.json()["code"] == "unsupported_colour"
    assert stored() == before


@pytest.mark.django_db
def test_the_form_shows_the_cmyk_refusal_beside_the_file(rad_client):
    resp = post_form(rad_client, _cmyk_jpeg(300, 260), name="chest.jpg", patient_id="PL-6")
    assert resp.status_code == 400
    assert "stored in CMYK colour" in resp.content.decode()
    assert stored()["images"] == 0


REFUSAL_MEMORY = """
import resource, sys
from training.ml.imaging import UploadPolicy, UploadRejected, decode_upload
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_upload(data, max_bytes=64 << 20, max_pixels=50_000_000, check_only=True,
                  policy=UploadPolicy(min_side=128, max_aspect_ratio=3))
except UploadRejected as exc:
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, exc.code)
"""


def test_a_large_progressive_cmyk_jpeg_is_refused_before_a_pixel_is_decoded(tmp_path):
    """A small file that libjpeg would hold at ~8 bytes a pixel (all four channels'
    coefficients) before any grey copy: refused while the peak grows by less than a byte a
    pixel."""
    side = 4000
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(_cmyk_jpeg(side, side, progressive=True, quality=50))
    done = run_python(REFUSAL_MEMORY, str(path), timeout=300)
    assert done.returncode == 0, done.stderr
    growth, code = done.stdout.split()
    assert code == "unsupported_colour"
    assert int(growth) < side * side, f"peak grew by {int(growth) / 2**20:.0f} MB"
