"""Make test images in memory: good uploads and bad ones.

Shared by unit and integration tests, so it imports neither Django nor torch. Every function is
pure and deterministic (same arguments, same bytes), which keeps sha256-based de-duplication
predictable; pass a different ``seed`` (or patient/accession) to get a different file.
"""

from __future__ import annotations

import struct
import zlib
from io import BytesIO

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

__all__ = [
    "bomb_png",
    "deflated_dicom_bomb",
    "dicom_bytes",
    "dicom_unsupported_syntax_bytes",
    "empty_bytes",
    "jpeg_bytes",
    "make_xray",
    "png16_bytes",
    "png_bytes",
    "text_named_png",
    "truncated_jpeg",
    "truncated_png",
]

#: Basic Text SR: a DICOM object that never has pixel data.
BASIC_TEXT_SR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.88.11")
#: MPEG-2 video: a transfer syntax pydicom has no decoder for.
MPEG2_MAIN_PROFILE = UID("1.2.840.10008.1.2.4.100")

_NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------


def _xray_array(width: int, height: int, seed: int) -> np.ndarray:
    """Float image in 0..1: dark background, a body, two darker lungs, a bright mediastinum."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u = (x + 0.5) / width - 0.5  # -0.5..0.5, left to right
    v = (y + 0.5) / height - 0.5  # -0.5..0.5, top to bottom

    img = np.full((height, width), 0.06)  # air around the patient
    body = (u / 0.46) ** 2 + (v / 0.52) ** 2 <= 1.0
    img[body] = 0.55  # soft tissue
    for side in (-1.0, 1.0):
        lung = ((u - side * 0.19) / 0.15) ** 2 + ((v + 0.02) / 0.32) ** 2 <= 1.0
        img[lung] = 0.30  # aerated lung: darker than tissue, brighter than air
    mediastinum = (np.abs(u) < 0.06) & (v > -0.35) & (v < 0.38)
    img[mediastinum] = 0.80  # spine, heart and great vessels
    heart = ((u + 0.05) / 0.12) ** 2 + ((v - 0.17) / 0.12) ** 2 <= 1.0
    img[heart & body] = 0.75
    # A few ribs across each lung, and some noise.
    ribs = (np.sin((v + 0.5) * np.pi * 18) > 0.85) & body & (np.abs(u) > 0.06)
    img[ribs] += 0.12
    img += rng.normal(0.0, 0.03, size=img.shape)
    return np.clip(img, 0.0, 1.0)


def make_xray(width: int = 256, height: int = 256, mode: str = "L", seed: int = 0) -> Image.Image:
    """A synthetic chest-X-ray-like picture, deterministic for a seed.

    ``mode`` is any Pillow mode reachable from "L" ("RGB", "RGBA", "P", "LA", "1", ...), or
    "I;16" for a 16-bit grayscale image using most of 0..65535.
    """
    arr = _xray_array(width, height, seed)
    if mode == "I;16":
        return Image.fromarray((arr * 65535).round().astype(np.uint16))  # Pillow names it I;16
    img = Image.fromarray((arr * 255).round().astype(np.uint8))
    return img if mode == "L" else img.convert(mode)


def png_bytes(img: Image.Image | None = None, **kw: object) -> bytes:
    """Encode ``img`` (default: ``make_xray(**kw)``) as PNG."""
    if img is None:
        img = make_xray(**kw)  # type: ignore[arg-type]
    elif kw:
        raise TypeError("pass either an image or make_xray() keyword arguments, not both")
    buf = BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(
    img: Image.Image | None = None, quality: int = 90, exif_orientation: int | None = None
) -> bytes:
    """Encode ``img`` (default: ``make_xray()``) as JPEG, optionally with an EXIF Orientation.

    The pixels are stored as given; a viewer that honours orientation 6 shows them rotated 90
    degrees clockwise (so width and height swap).
    """
    if img is None:
        img = make_xray()
    kwargs: dict[str, object] = {"quality": quality}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation  # Orientation
        kwargs["exif"] = exif
    buf = BytesIO()
    img.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def png16_bytes(width: int = 128, height: int = 128, *, lo: int = 1000, hi: int = 40000) -> bytes:
    """A 16-bit grayscale PNG whose values span ``lo..hi`` (not the full 16-bit range)."""
    arr = _xray_array(width, height, seed=0)
    arr = (arr - arr.min()) / (arr.max() - arr.min())
    values = (lo + arr * (hi - lo)).round().astype(np.uint16)
    buf = BytesIO()
    Image.fromarray(values).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------


def _stored_values(width: int, height: int, bits: int, seed: int, frames: int) -> np.ndarray:
    max_value = 2**bits - 1
    planes = [(_xray_array(width, height, seed + i) * max_value).round() for i in range(frames)]
    arr = np.stack(planes) if frames > 1 else planes[0]
    return arr.astype(np.uint8 if bits <= 8 else np.uint16)


def dicom_bytes(
    *,
    width: int = 128,
    height: int = 128,
    photometric: str = "MONOCHROME2",
    bits: int = 12,
    window: tuple[float, float] | None = None,
    patient_id: str = "MRN-001",
    patient_name: str = "Doe^Jane",
    sex: str = "F",
    birth_date: str = "19700101",
    accession: str = "ACC-001",
    study_date: str = "20260101",
    view: str = "PA",
    modality: str = "DX",
    with_pixels: bool = True,
    rgb: bool = False,
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int = 0,
    frames: int = 1,
    body_part: str = "CHEST",
) -> bytes:
    """A valid DICOM Part-10 file (preamble, DICM, file meta), written by pydicom.

    The STORED pixel values are the same for a given size/bits/seed whatever ``photometric``
    says, so a MONOCHROME1 file displays inverted relative to its MONOCHROME2 twin.
    ``with_pixels=False`` gives a Basic Text SR (no Pixel Data). ``rgb=True`` gives an 8-bit
    RGB image. ``transfer_syntax`` may be Explicit/Implicit VR Little Endian, Deflated, RLE
    Lossless, JPEG 2000 (via pylibjpeg-openjpeg) or JPEG Baseline (8-bit, via Pillow). Empty
    strings leave a tag out. UIDs are derived from the arguments, so output is deterministic.
    """
    transfer_syntax = UID(transfer_syntax)
    sop_class = DigitalXRayImageStorageForPresentation if with_pixels else BASIC_TEXT_SR_STORAGE
    key = [patient_id, accession, str(seed), str(width), str(height), photometric, str(bits)]
    study_uid = generate_uid(entropy_srcs=["study", *key])
    series_uid = generate_uid(entropy_srcs=["series", *key])
    sop_uid = generate_uid(entropy_srcs=["sop", *key, str(rgb), str(window), transfer_syntax])

    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = sop_class
    file_meta.MediaStorageSOPInstanceUID = sop_uid
    file_meta.TransferSyntaxUID = (
        transfer_syntax if transfer_syntax in _NATIVE_SYNTAXES else ExplicitVRLittleEndian
    )
    ds = FileDataset("", {}, file_meta=file_meta, preamble=b"\x00" * 128)

    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SpecificCharacterSet = "ISO_IR 192"
    optional = {
        "PatientID": patient_id,
        "PatientName": patient_name,
        "PatientSex": sex,
        "PatientBirthDate": birth_date,
        "AccessionNumber": accession,
        "StudyDate": study_date,
        "ViewPosition": view,
        "Modality": modality,
        "BodyPartExamined": body_part,
    }
    for keyword, value in optional.items():
        if value:
            setattr(ds, keyword, value)
    ds.StudyDescription = "CHEST 2 VIEWS"
    ds.Manufacturer = "imagegen"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1

    if with_pixels:
        if rgb:
            gray = _stored_values(width, height, 8, seed, frames)
            arr = np.stack([gray, gray // 2 + 64, 255 - gray], axis=-1).astype(np.uint8)
            ds.SamplesPerPixel = 3
            ds.PhotometricInterpretation = "RGB"
            ds.PlanarConfiguration = 0
            bits = 8
        else:
            arr = _stored_values(width, height, bits, seed, frames)
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = photometric
        ds.Rows = height
        ds.Columns = width
        ds.BitsAllocated = 8 if bits <= 8 else 16
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 0
        if frames > 1:
            ds.NumberOfFrames = frames
        if window is not None:
            ds.WindowCenter = window[0]
            ds.WindowWidth = window[1]
        ds.PixelData = arr.tobytes()
        _compress(ds, arr, transfer_syntax)
    elif transfer_syntax not in _NATIVE_SYNTAXES:
        raise ValueError("a DICOM without pixel data cannot use a compressed transfer syntax")

    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _compress(ds: FileDataset, arr: np.ndarray, transfer_syntax: UID) -> None:
    if transfer_syntax in _NATIVE_SYNTAXES:
        return
    if transfer_syntax == JPEGBaseline8Bit:
        if ds.BitsStored != 8 or arr.ndim != 2:
            raise ValueError("JPEG Baseline needs bits=8 and one grayscale frame")
        buf = BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=95)
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        return
    # RLE Lossless (pydicom's own encoder) or JPEG 2000 (pylibjpeg-openjpeg).
    ds.compress(transfer_syntax, arr, generate_instance_uid=False)


def dicom_unsupported_syntax_bytes(**kw: object) -> bytes:
    """A Part-10 DICOM image whose pixel data claims MPEG-2 video, which no decoder handles."""
    ds = pydicom.dcmread(BytesIO(dicom_bytes(**kw)))  # type: ignore[arg-type]
    ds.file_meta.TransferSyntaxUID = MPEG2_MAIN_PROFILE
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def deflated_dicom_bomb(inflated_mb: int = 64) -> bytes:
    """A small Deflated-transfer-syntax DICOM whose data set inflates to ``inflated_mb`` MiB.

    The bulk is an Encapsulated Document element full of zeros, which deflate shrinks ~1000x.
    """
    ds = pydicom.dcmread(BytesIO(dicom_bytes(width=16, height=16)))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.EncapsulatedDocument = bytes(inflated_mb * 1024 * 1024)
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def empty_bytes() -> bytes:
    return b""


def text_named_png() -> bytes:
    """Plain text, as if someone renamed notes.txt to scan.png."""
    return b"Patient notes: chest X-ray requested, PA view.\nThis is not an image.\n"


def _truncate(data: bytes, fraction: float = 0.6) -> bytes:
    return data[: int(len(data) * fraction)]


def truncated_png(fraction: float = 0.6) -> bytes:
    """A real PNG cut at ``fraction`` of its length (the header is intact)."""
    return _truncate(png_bytes(make_xray(256, 256, seed=1)), fraction)


def truncated_jpeg(fraction: float = 0.6) -> bytes:
    """A real JPEG cut at ``fraction`` of its length (the header is intact)."""
    return _truncate(jpeg_bytes(make_xray(256, 256, seed=1)), fraction)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny, well-formed PNG header that declares ``width`` x ``height`` 8-bit gray pixels.

    Signature + IHDR (correct CRC) + a small IDAT + IEND: a few hundred bytes. It would not
    decode completely (the IDAT is far too short); it exists to be rejected before decoding.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray, no interlace
    idat = zlib.compress(b"\x00" * 4096, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )
