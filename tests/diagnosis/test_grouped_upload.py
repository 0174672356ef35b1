"""Files sent together, or DICOM files of one StudyInstanceUID, become one study (issue #22, 6)."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from cxrweb.audit.models import AuditEvent
from diagnosis import services
from diagnosis.models import Image, Prediction, Study
from tests import imagegen
from training.ml.imaging import UploadRejected


@pytest.fixture
def api(api_token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    return client


def _png(seed: int) -> bytes:
    return imagegen.png_bytes(imagegen.make_xray(seed=seed))


def _file(data: bytes, name: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def _dicom(*, seed: int, study_uid: str = "", accession: str = "", patient_id: str = "MRN-D"):
    """A DICOM file of ``patient_id``, without an accession number unless given, and with
    ``study_uid`` as its StudyInstanceUID when given."""
    data = imagegen.dicom_bytes(seed=seed, accession=accession, patient_id=patient_id)
    if not study_uid:
        return data
    ds = pydicom.dcmread(BytesIO(data))
    ds.StudyInstanceUID = study_uid
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_two_images_with_one_patient_and_accession_in_two_requests_are_one_study(
    api, production_model
):
    first = api.post(
        "/api/v1/studies/",
        {
            "image": _file(_png(1), "pa.png"),
            "patient_id": "G-1",
            "accession_number": "ACC-G1",
            "view": "PA",
        },
    )
    second = api.post(
        "/api/v1/studies/",
        {
            "image": _file(_png(2), "lat.png"),
            "patient_id": "G-1",
            "accession_number": "ACC-G1",
            "view": "LATERAL",
        },
    )
    assert first.status_code == second.status_code == 201, second.content
    assert first.json()["id"] == second.json()["id"]
    body = api.get(f"/api/v1/studies/{first.json()['id']}/").json()
    assert len(body["images"]) == 2
    assert sorted(p["id"] for p in body["predictions"]) == sorted(
        [first.json()["prediction_id"], second.json()["prediction_id"]]
    )
    assert Study.objects.count() == 1


def test_several_images_in_one_request_without_an_accession_are_one_study(api, production_model):
    resp = api.post(
        "/api/v1/studies/",
        {
            "image": [_file(_png(1), "a.png"), _file(_png(2), "b.png"), _file(_png(3), "c.png")],
            "patient_id": "G-2",
        },
        format="multipart",
    )
    assert resp.status_code == 201, resp.content
    body = resp.json()
    study = Study.objects.get()
    assert body["id"] == study.pk and body["study_ids"] == [study.pk]
    assert body["accession_number"].startswith("CXR-")  # one generated for the batch
    assert len(body["images"]) == 3 and len(body["prediction_ids"]) == 3
    assert sorted(p["id"] for p in body["predictions"]) == sorted(body["prediction_ids"])
    assert {i.original_filename for i in study.images.all()} == {"a.png", "b.png", "c.png"}
    assert AuditEvent.objects.filter(action=AuditEvent.Action.UPLOAD).count() == 3


def test_a_batch_with_one_bad_file_stores_nothing(api, production_model, settings):
    resp = api.post(
        "/api/v1/studies/",
        {
            "image": [_file(_png(1), "good.png"), _file(imagegen.truncated_png(), "broken.png")],
            "patient_id": "G-3",
        },
        format="multipart",
    )
    assert resp.status_code == 400, resp.content
    assert resp.json()["filename"] == "broken.png"
    assert "broken.png" in resp.json()["error"]
    assert not Study.objects.exists() and not Image.objects.exists()
    assert not Prediction.objects.exists()
    stored = [p for p in settings.MEDIA_ROOT.rglob("*") if p.is_file() and p.suffix != ".pt"]
    assert stored == []  # good.png was written, then removed


def test_a_batch_accession_joins_the_first_files_study(radiologist, production_model):
    first = services.study_upload(uploaded_by=radiologist, data=_png(1), patient_id="G-4")
    second = services.study_upload(
        uploaded_by=radiologist,
        data=_png(2),
        patient_id="G-4",
        batch_accession=first.study.accession_number,
    )
    assert second.study.pk == first.study.pk and not second.study_created
    # A typed accession still wins over the batch's.
    third = services.study_upload(
        uploaded_by=radiologist,
        data=_png(3),
        patient_id="G-4",
        accession_number="OWN-1",
        batch_accession=first.study.accession_number,
    )
    assert third.study.accession_number == "OWN-1"


def test_two_dicom_files_with_one_study_instance_uid_are_one_study(api, production_model):
    uid = "1.2.826.0.1.3680043.8.498.22006"
    responses = [
        api.post(
            "/api/v1/studies/", {"image": _file(_dicom(seed=seed, study_uid=uid), f"{seed}.dcm")}
        )
        for seed in (1, 2)
    ]
    assert [r.status_code for r in responses] == [201, 201], responses[-1].content
    study = Study.objects.get()
    assert study.study_instance_uid == uid
    assert study.images.count() == 2
    body = api.get(f"/api/v1/studies/{study.pk}/").json()
    assert len(body["images"]) == 2 and len(body["predictions"]) == 2


def test_dicom_files_of_two_studies_sent_together_stay_two_studies(api, production_model):
    resp = api.post(
        "/api/v1/studies/",
        {
            "image": [
                _file(_dicom(seed=1, accession="D-A"), "a.dcm"),
                _file(_dicom(seed=2, accession="D-B"), "b.dcm"),
            ],
        },
        format="multipart",
    )
    assert resp.status_code == 201, resp.content
    assert len(resp.json()["study_ids"]) == 2
    assert set(Study.objects.values_list("accession_number", flat=True)) == {"D-A", "D-B"}


def test_an_accession_of_another_patient_is_refused_with_409(api, production_model):
    assert (
        api.post(
            "/api/v1/studies/",
            {"image": _file(_png(1), "a.png"), "patient_id": "P-A", "accession_number": "ACC-X"},
        ).status_code
        == 201
    )
    resp = api.post(
        "/api/v1/studies/",
        {"image": _file(_png(2), "b.png"), "patient_id": "P-B", "accession_number": "ACC-X"},
    )
    assert resp.status_code == 409, resp.content
    assert resp.json()["code"] == "accession_conflict"
    assert "another patient" in resp.json()["error"]
    assert Study.objects.get().images.count() == 1
    assert not Study.objects.filter(patient__mrn="P-B").exists()


def test_a_batch_accession_of_another_patient_is_refused(radiologist, production_model):
    other = services.study_upload(uploaded_by=radiologist, data=_png(1), patient_id="P-C")
    with pytest.raises(UploadRejected) as exc:
        services.study_upload(
            uploaded_by=radiologist,
            data=_png(2),
            patient_id="P-D",
            batch_accession=other.study.accession_number,
        )
    assert exc.value.code == "accession_conflict"


def test_a_study_instance_uid_of_another_patient_is_refused(api, production_model):
    uid = "1.2.826.0.1.3680043.8.498.22007"
    ok = api.post("/api/v1/studies/", {"image": _file(_dicom(seed=1, study_uid=uid), "a.dcm")})
    assert ok.status_code == 201, ok.content
    resp = api.post(
        "/api/v1/studies/",
        {"image": _file(_dicom(seed=2, study_uid=uid, patient_id="MRN-OTHER"), "b.dcm")},
    )
    assert resp.status_code == 409, resp.content
    assert resp.json()["code"] == "study_uid_conflict"
    assert Study.objects.get().images.count() == 1


def test_the_upload_form_without_javascript_makes_one_study_of_several_files(
    rad_client, production_model
):
    resp = rad_client.post(
        reverse("diagnosis:upload"),
        {
            "image": [_file(_png(1), "a.png"), _file(_png(2), "b.png")],
            "patient_id": "G-5",
            "priority": "0",
        },
    )
    assert resp.status_code == 302, resp.content[:2000]
    study = Study.objects.get()
    assert resp["Location"] == study.get_absolute_url()
    assert study.images.count() == 2
