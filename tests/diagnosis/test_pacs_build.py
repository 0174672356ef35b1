"""The DICOM objects for the PACS (diagnosis.pacs.build), read back with pydicom: hostile patient
data stays within its value representations, and the SR says what the result was."""

from __future__ import annotations

import datetime as dt
import io

import pydicom
import pytest
from pydicom.uid import generate_uid

from diagnosis.pacs.build import (
    NOTICE,
    ClassFinding,
    InstanceUids,
    ReportContent,
    SourceStudy,
    build_report,
    build_secondary_capture,
    dicom_text,
)
from diagnosis.pacs.send import AeTarget
from tests import imagegen

HOSTILE = SourceStudy(
    study_instance_uid=generate_uid(),
    patient_id="MRN\\42\x00<script>alert(1)</script>" + "9" * 80,
    patient_name="Doe^Jane=\u30e4\u30de\u30c0\r\n" + "x" * 100,
    patient_birth_date=dt.date(1970, 1, 2),
    patient_sex="female",
    accession_number="ACC-" + "7" * 40,
    study_date=dt.date(2026, 1, 1),
)


def _roundtrip(ds) -> pydicom.Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _sc(source: SourceStudy = HOSTILE):
    return build_secondary_capture(
        source=source,
        png=imagegen.png_bytes(imagegen.make_xray(96, 80, mode="RGB", seed=1)),
        uids=InstanceUids(generate_uid(), generate_uid()),
        description="overlay",
    )


def _texts(ds) -> list[str]:
    out = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "TEXT":
            out.append(str(item.TextValue))
        out += _texts(item)
    return out


def test_hostile_patient_data_is_cut_to_its_vr_and_cleared_of_separators() -> None:
    sc = _roundtrip(_sc())
    assert len(sc.PatientID) <= 64 and "\\" not in sc.PatientID and "\x00" not in sc.PatientID
    assert sc.PatientID.startswith("MRN 42 <script>")
    assert len(sc.AccessionNumber) <= 16
    name = str(sc.PatientName)
    assert "=" not in name and "\r" not in name and len(name) <= 64
    assert name.startswith("Doe^Jane")
    assert sc.get("PatientSex", "") == ""  # "female" is no DICOM code: left empty, not guessed
    assert sc.PatientBirthDate == "19700102"
    assert sc.Rows == 80 and sc.Columns == 96 and sc.SamplesPerPixel == 3
    assert sc.StudyInstanceUID == HOSTILE.study_instance_uid


@pytest.mark.parametrize(
    ("value", "vr", "expected"),
    [
        ("a\\b", "LO", "a b"),
        ("Smith", "PN", "Smith^"),
        ("m", "CS", "M"),
        ("x" * 20, "SH", "x" * 16),
    ],
)
def test_dicom_text(value: str, vr: str, expected: str) -> None:
    assert dicom_text(value, vr) == expected


def test_a_report_of_a_flagged_result_carries_findings_version_notice_and_ood() -> None:
    sc = _sc()
    content = ReportContent(
        status="done",
        label="PNEUMONIA",
        flagged_classes=["PNEUMONIA"],
        findings=[
            ClassFinding("PNEUMONIA", 0.81, 0.292, True),
            ClassFinding("NORMAL", 0.19, 0.5, False, normal=True),
        ],
        model_version="pneu-v1",
        ood_flagged=True,
        ood_score=3.5,
        ood_threshold=2.0,
    )
    sr = _roundtrip(
        build_report(
            content=content,
            uids=InstanceUids(generate_uid(), generate_uid(), 902),
            evidence=[sc],
            images=[sc],
        )
    )
    texts = _texts(sr)
    assert sr.Modality == "SR" and sr.StudyInstanceUID == sc.StudyInstanceUID
    assert NOTICE in texts and "pneu-v1" in texts
    assert "Model result: PNEUMONIA (flagged: PNEUMONIA)" in texts
    assert any(
        t.startswith("PNEUMONIA: probability 0.810, threshold 0.292 (flagged)") for t in texts
    )
    assert any(t.startswith("UNRELIABLE") for t in texts)
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"


def test_a_report_of_a_failed_analysis_says_so_and_gives_no_result() -> None:
    content = ReportContent(status="failed", failure="view 3: decode error", model_version="v")
    sr = _roundtrip(
        build_report(
            content=content, uids=InstanceUids(generate_uid(), generate_uid()), evidence=[_sc()]
        )
    )
    texts = _texts(sr)
    assert "FAILED: view 3: decode error" in texts
    assert not any(t.startswith("Model result") for t in texts)
    assert "No finding: the analysis did not finish." in texts


def test_a_reading_report_is_verified_with_the_radiologist_and_final_label() -> None:
    content = ReportContent(
        status="done", label="NORMAL", findings=[ClassFinding("NORMAL", 0.9, 0.5, False, True)],
        model_version="v", final_label="PNEUMONIA", radiologist="Radiologist^Ada",
    )  # fmt: skip
    sr = _roundtrip(
        build_report(
            content=content, uids=InstanceUids(generate_uid(), generate_uid()), evidence=[_sc()]
        )
    )
    assert sr.VerificationFlag == "VERIFIED"
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Radiologist^Ada"
    assert "PNEUMONIA" in _texts(sr)


@pytest.mark.parametrize("text", ["pacs:104", "pacs:port:AET", "pacs:104:" + "A" * 17, ":104:X"])
def test_a_bad_ae_target_is_refused_with_the_expected_shape(text: str) -> None:
    with pytest.raises(ValueError, match="CXR_PACS_AE"):
        AeTarget.parse(text)


def test_an_ae_target_is_parsed() -> None:
    assert AeTarget.parse("pacs.example.org:104:PACS") == AeTarget("pacs.example.org", 104, "PACS")
