"""The private Orthanc the PACS tests use: it runs, takes a study and answers DICOMweb."""

from __future__ import annotations

from tests import imagegen
from tests.orthanc import Orthanc


def test_orthanc_stores_an_instance_and_finds_it_by_qido_rs(orthanc: Orthanc) -> None:
    answer = orthanc.upload(imagegen.dicom_bytes(patient_id="MRN-ORTH", accession="ACC-ORTH"))
    assert answer["Status"] == "Success"
    assert orthanc.studies() == [answer["ParentStudy"]]
    found = orthanc.qido_studies(AccessionNumber="ACC-ORTH")
    assert len(found) == 1
    assert found[0]["00100020"]["Value"] == ["MRN-ORTH"]  # PatientID
    assert orthanc.get("/modalities") == ["cxr"]


def test_each_test_starts_with_an_empty_orthanc(orthanc: Orthanc) -> None:
    assert orthanc.studies() == []
