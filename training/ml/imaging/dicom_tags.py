"""Patient, study and display fields read from a DICOM header, tolerant of bad values."""

from __future__ import annotations

import datetime
import logging
from typing import Any

from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID

from .decoded import DicomInfo

logger = logging.getLogger(__name__)

_VIEW_POSITIONS = {
    "PA": "PA",
    "AP": "AP",
    "LL": "LATERAL",
    "RL": "LATERAL",
    "LAT": "LATERAL",
    "LATERAL": "LATERAL",
}

# Header tags worth showing next to the image (keyword order is the display order).
_DISPLAY_TAGS = (
    "Modality",
    "SOPClassUID",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "StationName",
    "StudyDescription",
    "SeriesDescription",
    "SeriesNumber",
    "InstanceNumber",
    "BodyPartExamined",
    "ViewPosition",
    "ImageLaterality",
    "PatientOrientation",
    "PresentationIntentType",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTFunction",
    "RescaleIntercept",
    "RescaleSlope",
    "KVP",
    "ExposureTime",
    "XRayTubeCurrent",
    "Exposure",
    "DistanceSourceToDetector",
    "ContentDate",
    "AcquisitionDate",
    "BurnedInAnnotation",
    "LossyImageCompression",
)
_MAX_TAG_TEXT = 256


def dicom_info(ds: Any) -> DicomInfo:
    photometric = _text(ds, "PhotometricInterpretation").upper()
    sex = _text(ds, "PatientSex").upper()
    return DicomInfo(
        patient_id=_identifier_text(ds, "PatientID"),
        patient_name=_person_name(ds),
        patient_sex=sex if sex in ("M", "F", "O") else "",
        patient_birth_date=_parse_da(_text(ds, "PatientBirthDate")),
        accession_number=_identifier_text(ds, "AccessionNumber"),
        study_date=_parse_da(_text(ds, "StudyDate")),
        study_description=_text(ds, "StudyDescription"),
        view_position=_VIEW_POSITIONS.get(_text(ds, "ViewPosition").upper(), ""),
        modality=_text(ds, "Modality").upper(),
        body_part=_text(ds, "BodyPartExamined"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        photometric_interpretation=photometric,
        bits_stored=as_int(_get(ds, "BitsStored")),
        tags=_display_tags(ds),
    )


def _get(ds: Any, keyword: str) -> Any:
    """ds.<keyword> or None; a value pydicom cannot parse counts as absent."""
    try:
        return ds.get(keyword)
    except Exception:  # noqa: BLE001 - one bad header value must not reject the image
        logger.info("unreadable DICOM element %s", keyword, exc_info=True)
        return None


def _text(ds: Any, keyword: str) -> str:
    value = _get(ds, keyword)
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return ""
    if isinstance(value, Sequence):
        return ""
    if isinstance(value, list | tuple | MultiValue):
        value = value[0] if len(value) else ""
    return _clean(str(value))


def _identifier_text(ds: Any, keyword: str) -> str:
    """An identifier tag as the file holds it, only its padding trimmed: nothing removed or cut,
    so that the upload refuses a control character or an overlong ID instead of storing another."""
    value = _get(ds, keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple | MultiValue):
        value = "\\".join(str(v) for v in value)
    return str(value).strip(" \x00")


def _clean(text: str) -> str:
    return text.replace("\x00", "").strip()[:_MAX_TAG_TEXT]


def as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _person_name(ds: Any) -> str:
    """PatientName as "Family Given Middle" (DICOM stores "Family^Given^Middle^Prefix^Suffix").

    Only the padding (spaces, NULs) at the ends of each part is trimmed: a NUL, line break or
    other control character inside stays, so that the upload refuses the name instead of storing
    another one (nor is a long name cut here)."""
    pn = _get(ds, "PatientName")
    if pn is None:
        return ""
    try:
        parts = [
            str(p).strip(_NAME_PADDING) for p in (pn.family_name, pn.given_name, pn.middle_name)
        ]
        name = " ".join(p for p in parts if p)
    except Exception:  # noqa: BLE001 - fall back to the raw text
        name = ""
    if not name:
        # e.g. a name given only in its ideographic/phonetic groups ("=..."): show the raw text.
        raw = str(pn).replace("^", " ").replace("=", " ").strip(_NAME_PADDING)
        name = " ".join(p for p in raw.split(" ") if p)
    return name


_NAME_PADDING = " \x00"


def _parse_da(value: str) -> datetime.date | None:
    """A DICOM DA value (YYYYMMDD, or the old YYYY.MM.DD) as a date; anything else -> None."""
    text = value.strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def uid_display(uid: str) -> str:
    name = UID(uid).name
    return f"{name} ({uid})" if name and name != uid else uid


def _display_tags(ds: Any) -> dict[str, str]:
    tags: dict[str, str] = {}
    file_meta = getattr(ds, "file_meta", None)
    ts = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if ts:
        tags["TransferSyntaxUID"] = uid_display(str(ts))
    for keyword in _DISPLAY_TAGS:
        value = _get(ds, keyword)
        text = _display_value(value)
        if text:
            tags[keyword] = text
    return tags


def _display_value(value: Any) -> str:
    if value is None or isinstance(value, bytes | bytearray | Sequence):
        return ""
    if isinstance(value, UID):
        return _clean(value.name or str(value))
    if isinstance(value, list | tuple | MultiValue):
        return _clean(", ".join(_display_value(v) for v in value))
    return _clean(str(value))
