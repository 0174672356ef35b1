"""STOW-RS (`POST /dicomweb/studies`): instances stored through the upload service, answered
per PS3.18 (application/dicom+json, ReferencedSOPSequence / FailedSOPSequence, 200/202/409)."""

from __future__ import annotations

import json

import pytest

from cxrweb.audit.models import AuditEvent
from diagnosis.dicomweb import split_multipart_related
from diagnosis.models import Image, Study
from tests.pacs.scp import instance, instance_bytes, new_study_uid

pytestmark = pytest.mark.django_db

BOUNDARY = "cxr-boundary-7d1f"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
REFERENCED, FAILED = "00081199", "00081198"


def multipart(*files: bytes, part_type: str = "application/dicom") -> bytes:
    body = b""
    for data in files:
        body += f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def stow(client, token: str, body: bytes, content_type: str = CONTENT_TYPE):
    return client.post(
        "/dicomweb/studies",
        data=body,
        content_type=content_type,
        HTTP_AUTHORIZATION=f"Token {token}",
        HTTP_ACCEPT="application/dicom+json",
    )


def _uids(sequence: dict) -> list[str]:
    return [item["00081155"]["Value"][0] for item in sequence["Value"]]


def test_two_instances_of_one_study_are_stored_as_one_study(client, api_token, radiologist):
    study_uid = new_study_uid()
    pa = instance(study_uid=study_uid, seed=21, patient_id="MRN-STOW1", view="PA")
    lateral = instance(study_uid=study_uid, seed=22, patient_id="MRN-STOW1", view="LL")
    response = stow(client, api_token, multipart(instance_bytes(pa), instance_bytes(lateral)))

    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/dicom+json"
    body = json.loads(response.content)
    assert FAILED not in body
    assert _uids(body[REFERENCED]) == [pa.SOPInstanceUID, lateral.SOPInstanceUID]
    assert body[REFERENCED]["Value"][0]["00081150"]["Value"] == [str(pa.SOPClassUID)]
    study = Study.objects.get()
    assert study.study_instance_uid == study_uid and study.images.count() == 2
    assert study.uploaded_by == radiologist
    events = AuditEvent.objects.filter(action=AuditEvent.Action.UPLOAD)
    assert {e.detail["via"] for e in events} == {"stow-rs"} and events.count() == 2


def test_a_refused_instance_beside_a_good_one_gives_202_with_the_reason(client, api_token):
    good = instance(seed=23, patient_id="MRN-STOW2")
    ct = instance(seed=24, patient_id="MRN-STOW2", modality="CT")
    response = stow(client, api_token, multipart(instance_bytes(good), instance_bytes(ct)))

    assert response.status_code == 202, response.content
    body = json.loads(response.content)
    assert _uids(body[REFERENCED]) == [good.SOPInstanceUID]
    [failed] = body[FAILED]["Value"]
    assert failed["00081155"]["Value"] == [ct.SOPInstanceUID]
    assert failed["00081197"]["Value"] == [0xA900]  # FailureReason
    assert failed["00000902"]["Value"][0].startswith("modality_refused: Refused")
    assert Image.objects.get().sop_instance_uid == good.SOPInstanceUID
    refused = AuditEvent.objects.get(action=AuditEvent.Action.UPLOAD_REJECTED)
    assert refused.detail["via"] == "stow-rs" and refused.detail["code"] == "modality_refused"


def test_nothing_stored_gives_409(client, api_token):
    response = stow(client, api_token, multipart(b"not a dicom file at all", b"\x00" * 200))
    assert response.status_code == 409, response.content
    failed = json.loads(response.content)[FAILED]["Value"]
    assert [f["00081197"]["Value"] for f in failed] == [[0xC000], [0xC000]]
    assert not Image.objects.exists()


@pytest.mark.parametrize(
    ("content_type", "code"),
    [
        ("application/dicom", 415),
        ('multipart/related; type="application/dicom+json"; boundary=x', 415),
        ('multipart/related; type="application/dicom"', 400),
    ],
)
def test_a_body_that_is_not_multipart_related_dicom_is_refused(
    client, api_token, content_type, code
):
    data = instance_bytes(instance(seed=25))
    response = stow(client, api_token, data, content_type=content_type)
    assert response.status_code == code
    assert json.loads(response.content)["error"]
    assert not Image.objects.exists()


def test_it_needs_a_clinical_user(client, outsider):
    from cxrweb.apitokens.models import ApiToken

    body = multipart(instance_bytes(instance(seed=26)))
    assert stow(client, "not-a-token", body).status_code == 401
    outsider_token = ApiToken.objects.create(user=outsider)[1]
    assert stow(client, outsider_token, body).status_code == 403
    assert not Image.objects.exists()


def test_the_parts_come_back_byte_for_byte():
    files = [b"\r\n--not-the-boundary\r\n", bytes(range(256)) * 3, b"\r\n\r\n"]
    assert split_multipart_related(CONTENT_TYPE, multipart(*files)) == files
    # A part without headers takes the root type.
    bare = f"--{BOUNDARY}\r\n\r\nA\r\n\r\nB\r\n--{BOUNDARY}--".encode()
    assert split_multipart_related(CONTENT_TYPE, bare) == [b"A\r\n\r\nB"]


def test_a_studys_url_takes_only_that_studys_instances(client, api_token):
    """`POST /dicomweb/studies/{uid}` (PS3.18 10.5): an instance of another study is refused
    with a processing failure and stored nowhere; the study's own are stored."""
    study_uid, other_uid = new_study_uid(), new_study_uid()
    own = instance(study_uid=study_uid, seed=31, patient_id="MRN-STOW9")
    stray = instance(study_uid=other_uid, seed=32, patient_id="MRN-STOW9")
    response = client.post(
        f"/dicomweb/studies/{study_uid}",
        data=multipart(instance_bytes(own), instance_bytes(stray)),
        content_type=CONTENT_TYPE,
        HTTP_AUTHORIZATION=f"Token {api_token}",
        HTTP_ACCEPT="application/dicom+json",
    )

    assert response.status_code == 202, response.content
    body = json.loads(response.content)
    assert _uids(body[REFERENCED]) == [own.SOPInstanceUID]
    [failed] = body[FAILED]["Value"]
    assert failed["00081155"]["Value"] == [stray.SOPInstanceUID]
    assert failed["00081197"]["Value"] == [0x0110]
    assert failed["00000902"]["Value"] == ["other_study: not the URL's study"]
    assert [s.study_instance_uid for s in Study.objects.all()] == [study_uid]
    refused = AuditEvent.objects.get(action=AuditEvent.Action.UPLOAD_REJECTED)
    assert refused.detail["code"] == "other_study" and other_uid in refused.detail["reason"]

    alone = client.post(
        f"/dicomweb/studies/{other_uid}",
        data=multipart(instance_bytes(stray)),
        content_type=CONTENT_TYPE,
        HTTP_AUTHORIZATION=f"Token {api_token}",
    )
    assert alone.status_code == 200, alone.content  # at its own study's URL it is taken
    assert (
        client.post(
            "/dicomweb/studies/not-a-uid",
            data=multipart(instance_bytes(stray)),
            content_type=CONTENT_TYPE,
            HTTP_AUTHORIZATION=f"Token {api_token}",
        ).status_code
        == 404
    )
