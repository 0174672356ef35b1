"""training.ml.imaging.deid: the PS3.15 Basic Profile plus our pseudonyms and UIDs."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest

from tests import imagegen
from training.ml.imaging.deid import DeidentificationRefused, deidentify_dicom, pseudonym

SECRET = b"site-secret"


def _with(**attrs) -> bytes:
    ds = pydicom.dcmread(BytesIO(imagegen.dicom_bytes(patient_id="MRN-42", accession="ACC-42")))
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.add_new(0x00110010, "LO", "ACME PRIVATE")
    ds.add_new(0x00111001, "LO", "MRN-42 in a private tag")
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_identifiers_and_private_tags_go_and_the_pixels_stay():
    data = _with(InstitutionName="St Elsewhere", ReferringPhysicianName="Dr^Who")
    out = pydicom.dcmread(BytesIO(deidentify_dicom(data, secret=SECRET, patient_key="Pkey")))
    original = pydicom.dcmread(BytesIO(data))
    assert b"MRN-42" not in deidentify_dicom(data, secret=SECRET, patient_key="Pkey")
    assert out.PatientID == "Pkey" and out.AccessionNumber in ("", None)
    assert "St Elsewhere" not in str(out.get("InstitutionName", ""))
    assert not any(element.tag.is_private for element in out)
    assert out.PixelData == original.PixelData
    assert out.PatientIdentityRemoved == "YES"


def test_uids_are_new_but_stable_for_one_secret():
    data = _with()
    first = pydicom.dcmread(BytesIO(deidentify_dicom(data, secret=SECRET, patient_key="P")))
    again = pydicom.dcmread(BytesIO(deidentify_dicom(data, secret=SECRET, patient_key="P")))
    other = pydicom.dcmread(BytesIO(deidentify_dicom(data, secret=b"other", patient_key="P")))
    original = pydicom.dcmread(BytesIO(data))
    assert first.StudyInstanceUID != original.StudyInstanceUID
    assert first.StudyInstanceUID == again.StudyInstanceUID != other.StudyInstanceUID
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID


def test_pseudonyms_are_stable_keyed_and_kind_separated():
    assert pseudonym(SECRET, "patient", "MRN-1", prefix="P") == pseudonym(
        SECRET, "patient", "MRN-1", prefix="P"
    )
    assert pseudonym(SECRET, "patient", "MRN-1", prefix="P") != pseudonym(
        b"x", "patient", "MRN-1", prefix="P"
    )
    assert pseudonym(SECRET, "patient", "1", prefix="") != pseudonym(
        SECRET, "study", "1", prefix=""
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_with(BurnedInAnnotation="YES"), "Burned In Annotation is YES"),
        (imagegen.dicom_bytes(with_pixels=False), "no pixel data"),
        (b"not dicom at all", "not a readable DICOM file"),
    ],
)
def test_it_refuses_what_it_cannot_de_identify(data, reason):
    with pytest.raises(DeidentificationRefused, match=reason):
        deidentify_dicom(data, secret=SECRET, patient_key="P")
