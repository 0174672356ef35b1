"""DICOM objects for the PACS, built with highdicom from plain data (no Django).

- :func:`build_secondary_capture`: the Grad-CAM overlay (or, when the analysis failed, the X-ray
  itself) as a Secondary Capture image in the source study;
- :func:`build_report`: a Comprehensive SR in the shape of TID 2000 (Basic Diagnostic Imaging
  Report): a root "Diagnostic Imaging Report" container with a Findings section (one finding per
  class with its probability and operating threshold), an Impressions section (the study's
  result, flagged classes, out-of-distribution status, the radiologist's final label) and the
  algorithm's name and version, plus the decision-support notice. TID 1500 (Measurement Report)
  was not used: it has no place for free text (the notice, a failure, a reading's label) and its
  measurements are tied to image regions and tracking identifiers that a whole-image classifier
  does not have.

Patient and study data are hostile input: every string is cut to its value representation's
length and cleared of control characters and backslashes (DICOM's value separator) before it
reaches a data element (:func:`dicom_text`).
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

MANUFACTURER = "CXR triage"
NOTICE = (
    "Decision support only, not a diagnosis: for triage by a radiologist, who makes the "
    "diagnosis. Probabilities are the model's, at the operating thresholds shown."
)
_SCHEME = "99CXRT"  # private coding scheme for what no standard code names
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
# Maximum lengths of the value representations used for patient and study data (PS3.5 6.2).
VR_MAX = {"LO": 64, "SH": 16, "PN": 64, "CS": 16, "ST": 1024, "UT": 10000}


def dicom_text(value: object, vr: str) -> str:
    """`value` as a DICOM string of representation `vr`: no control characters nor backslashes
    (a backslash separates values), whitespace collapsed, cut to the VR's length. PN keeps
    '^' (component separator) but no '=' (group separator)."""
    text = _CONTROL.sub(" ", "" if value is None else str(value))
    if vr == "PN":
        text = text.replace("=", " ").strip()
        if text and "^" not in text:
            text = text[: VR_MAX[vr] - 1] + "^"  # one component: the family name (PS3.5 6.2.1)
    if vr == "CS":
        text = re.sub(r"[^A-Z0-9_ ]", "", text.upper())
    return " ".join(text.split())[: VR_MAX[vr]]


def _code(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator=_SCHEME, meaning=meaning[:64])


@dataclass(frozen=True)
class SourceStudy:
    """The patient and study the objects belong to (from the source DICOM or the app's rows)."""

    study_instance_uid: str
    patient_id: str
    patient_name: str = ""
    patient_birth_date: dt.date | None = None
    patient_sex: str = ""  # M, F, O or ""
    accession_number: str = ""
    study_date: dt.date | None = None
    study_id: str = ""
    patient_orientation: tuple[str, str] | None = None
    # Headers (no pixels) of the source DICOM instances, referenced by the SR; empty for PNG/JPEG.
    instances: tuple[Dataset, ...] = ()


@dataclass(frozen=True)
class ClassFinding:
    label: str
    probability: float
    threshold: float
    flagged: bool
    normal: bool = False


@dataclass(frozen=True)
class ReportContent:
    """What the SR says."""

    status: str  # done | failed | none (no model result: a reading signed without one)
    label: str | None = None
    flagged_classes: list[str] = field(default_factory=list)
    findings: list[ClassFinding] = field(default_factory=list)
    model_version: str | None = None
    failure: str = ""  # why the analysis failed (status failed)
    ood_flagged: bool | None = None  # None: the version has no out-of-distribution check
    ood_score: float | None = None
    ood_threshold: float | None = None
    final_label: str | None = None  # the radiologist's, for a signed reading
    radiologist: str = ""
    reading_notes: str = ""


@dataclass(frozen=True)
class InstanceUids:
    series_instance_uid: str
    sop_instance_uid: str
    series_number: int = 901
    instance_number: int = 1


def _patient_kwargs(source: SourceStudy) -> dict:
    sex = dicom_text(source.patient_sex, "CS")
    return {
        "patient_id": dicom_text(source.patient_id, "LO"),
        "patient_name": dicom_text(source.patient_name, "PN") or None,
        "patient_birth_date": source.patient_birth_date.strftime("%Y%m%d")
        if source.patient_birth_date
        else None,
        "patient_sex": sex if sex in ("M", "F", "O") else None,
        "accession_number": dicom_text(source.accession_number, "SH") or None,
        "study_id": dicom_text(source.study_id, "SH") or None,
        "study_date": source.study_date,
    }


def build_secondary_capture(
    *, source: SourceStudy, png: bytes, uids: InstanceUids, description: str
) -> Dataset:
    """A Secondary Capture (RGB, 8 bits) of `png` (a PNG, or a JPEG display copy: pictures the
    app wrote itself) in the source study."""
    with Image.open(io.BytesIO(png), formats=["PNG", "JPEG"]) as picture:
        pixels = np.asarray(picture.convert("RGB"), dtype=np.uint8)
    now = dt.datetime.now()
    sc = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=source.study_instance_uid,
        series_instance_uid=uids.series_instance_uid,
        series_number=uids.series_number,
        sop_instance_uid=uids.sop_instance_uid,
        instance_number=uids.instance_number,
        manufacturer=MANUFACTURER,
        # highdicom asks for an orientation; the source's is used, else the element is left
        # empty (type 2) below rather than guessed.
        patient_orientation=source.patient_orientation or ("L", "F"),
        series_description=dicom_text(description, "LO"),
        content_date=now.date(),
        content_time=now.time(),
        specific_character_set="ISO_IR 192",
        **_patient_kwargs(source),
    )
    sc.ImageComments = dicom_text(NOTICE, "ST")
    if not source.patient_orientation:
        sc.PatientOrientation = []
    sc.BurnedInAnnotation = "NO"
    return sc


def _text(name, value: str, relationship: str = "CONTAINS") -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=name, value=dicom_text(value, "UT") or "-", relationship_type=relationship
    )


def _num(name, value: float, relationship: str = "HAS PROPERTIES") -> hd.sr.NumContentItem:
    return hd.sr.NumContentItem(
        name=name, value=round(float(value), 6), unit=codes.UCUM.NoUnits,
        relationship_type=relationship,
    )  # fmt: skip


def _container(name, items: Sequence[hd.sr.ContentItem]) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(name=name, relationship_type="CONTAINS")
    container.ContentSequence = hd.sr.ContentSequence(items, is_root=False)
    return container


def _findings(content: ReportContent) -> list[hd.sr.ContentItem]:
    items: list[hd.sr.ContentItem] = []
    for f in content.findings:
        verdict = "flagged" if f.flagged else ("normal class" if f.normal else "below threshold")
        item = _text(
            codes.DCM.Finding,
            f"{f.label}: probability {f.probability:.3f}, threshold {f.threshold:.3f} ({verdict})",
        )
        item.ContentSequence = hd.sr.ContentSequence(
            [
                _text(_code("CLASS", "Class label"), f.label, "HAS PROPERTIES"),
                _num(codes.DCM.Probability, f.probability),
                _num(_code("THRESH", "Operating threshold"), f.threshold),
            ],
            is_root=False,
        )
        items.append(item)
    if not items:
        items.append(_text(codes.DCM.Finding, "No finding: the analysis did not finish."))
    return items


def _impressions(content: ReportContent) -> list[hd.sr.ContentItem]:
    status = _code("STATUS", "Analysis status")
    if content.status == "failed":
        items: list[hd.sr.ContentItem] = [
            _text(status, f"FAILED: {content.failure or 'the analysis failed'}")
        ]
        items.append(
            _text(
                codes.DCM.Impression,
                "The model could not analyse every view of this study: no result is given "
                "for it. Read the study without the model.",
            )
        )
    elif content.status == "none":
        items = [_text(status, "no model result")]
        items.append(_text(codes.DCM.Impression, "The model gave no result for this study."))
    else:
        items = [_text(status, "done")]
        flagged = ", ".join(content.flagged_classes)
        summary = f"Model result: {content.label}" + (
            f" (flagged: {flagged})" if flagged else " (not flagged)"
        )
        items.append(_text(codes.DCM.Impression, summary))
    items += _ood(content)
    if content.final_label is not None:
        items.append(_text(_code("FINAL", "Radiologist final label"), content.final_label))
        if content.radiologist:
            items.append(_text(codes.DCM.PersonObserverName, content.radiologist))
        if content.reading_notes:
            items.append(_text(codes.DCM.Comment, content.reading_notes))
    return items


def _ood(content: ReportContent) -> list[hd.sr.ContentItem]:
    if content.ood_flagged is None:
        return []
    name = _code("OOD", "Out-of-distribution status")
    if content.ood_flagged:
        value = "UNRELIABLE: the image is unlike the model's training data; do not rely on it."
    else:
        value = "within the model's training distribution"
    item = _text(name, value)
    children: list[hd.sr.ContentItem] = []
    if content.ood_score is not None:
        children.append(_num(_code("OODSCORE", "Out-of-distribution score"), content.ood_score))
    if content.ood_threshold is not None:
        children.append(
            _num(_code("OODTHR", "Out-of-distribution threshold"), content.ood_threshold)
        )
    if children:
        item.ContentSequence = hd.sr.ContentSequence(children, is_root=False)
    return [item]


def build_report(
    *,
    content: ReportContent,
    uids: InstanceUids,
    evidence: Sequence[Dataset],
    images: Sequence[Dataset] = (),
) -> hd.sr.ComprehensiveSR:
    """The SR of `content`. `evidence`: the instances it refers to, the first one setting the
    patient and study (the Secondary Capture the app made); `images`: those of them cited as the
    images the findings were made on."""
    algorithm = [
        _text(codes.DCM.AlgorithmName, MANUFACTURER),
        _text(codes.DCM.AlgorithmVersion, content.model_version or "none"),
        _text(_code("NOTICE", "Decision support notice"), NOTICE),
    ]
    cited = [
        hd.sr.ImageContentItem(
            name=codes.DCM.SourceImageForImageProcessingOperation,
            referenced_sop_class_uid=ds.SOPClassUID,
            referenced_sop_instance_uid=ds.SOPInstanceUID,
            relationship_type="CONTAINS",
        )
        for ds in images
    ]
    root = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept("18748-4", "LN", "Diagnostic Imaging Report"),
        template_id="2000",
    )
    root.ContentSequence = hd.sr.ContentSequence(
        [
            *algorithm,
            _container(codes.DCM.Findings, [*_findings(content), *cited]),
            _container(codes.DCM.Impressions, _impressions(content)),
        ],
        is_root=False,
    )
    reading = content.final_label is not None
    return hd.sr.ComprehensiveSR(
        evidence=list(evidence),
        content=root,
        series_instance_uid=uids.series_instance_uid,
        series_number=uids.series_number,
        sop_instance_uid=uids.sop_instance_uid,
        instance_number=uids.instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=reading,
        is_verified=reading and bool(content.radiologist),
        verifying_observer_name=dicom_text(content.radiologist, "PN") or None if reading else None,
        verifying_organization=MANUFACTURER if reading and content.radiologist else None,
        series_description="CXR triage reading" if reading else "CXR triage AI result",
        specific_character_set="ISO_IR 192",
    )


__all__ = [
    "NOTICE",
    "ClassFinding",
    "InstanceUids",
    "ReportContent",
    "SourceStudy",
    "build_report",
    "build_secondary_capture",
    "dicom_text",
]
