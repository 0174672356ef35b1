"""Orthanc's DICOMweb client stores a study in the app (under gunicorn) by STOW-RS: a real
client's multipart body, sent chunked."""

from __future__ import annotations

import json

import pytest

from diagnosis.models import Study
from tests.orthanc import Orthanc
from tests.pacs.scp import instance, instance_bytes, new_study_uid

pytestmark = pytest.mark.integration


def test_orthanc_stores_a_study_in_the_app_by_stow_rs(
    orthanc: Orthanc, web_app, api_token, radiologist
):
    status, _, body = orthanc.request(
        "PUT",
        "/dicom-web/servers/cxr",
        json.dumps(
            {
                "Url": f"{web_app.url}/dicomweb",
                "HttpHeaders": {"Authorization": f"Token {api_token}"},
                # Orthanc's default, said aloud: a chunked body, no Content-Length.
                "ChunkedTransfers": True,
            }
        ).encode(),
    )
    assert status < 400, body
    study_uid = new_study_uid()
    for seed, view in ((41, "PA"), (42, "LL")):
        ds = instance(study_uid=study_uid, seed=seed, patient_id="MRN-OSTOW", view=view)
        orthanc.upload(instance_bytes(ds))
    [orthanc_study] = orthanc.studies()

    orthanc.post("/dicom-web/servers/cxr/stow", {"Resources": [orthanc_study]})

    study = Study.objects.get(study_instance_uid=study_uid)
    assert study.patient.mrn == "MRN-OSTOW"
    assert study.images.count() == 2
    assert study.uploaded_by == radiologist
