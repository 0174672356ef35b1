"""The C-STORE SCP (`manage.py dicom_scp`) as a real process: what it stores, what it refuses."""

from __future__ import annotations

import subprocess

import pytest
from pydicom.uid import SecondaryCaptureImageStorage

from cxrweb.audit.models import AuditEvent
from diagnosis.models import Image, Prediction, Study
from tests.pacs.scp import instance, instance_bytes, new_study_uid

pytestmark = pytest.mark.integration


def test_two_instances_of_one_study_become_one_study_with_two_images(scp):
    study_uid = new_study_uid()
    pa = instance(study_uid=study_uid, seed=1, patient_id="MRN-SCP1", view="PA")
    lateral = instance(study_uid=study_uid, seed=2, patient_id="MRN-SCP1", view="LL")
    sent = scp.send(pa, lateral, calling_aet="MODALITY1")
    assert [s.status for s in sent] == [0, 0], sent

    study = Study.objects.select_related("patient", "uploaded_by").get()
    assert study.study_instance_uid == study_uid
    assert study.accession_number == "ACC-001"  # AccessionNumber
    assert study.view == "PA"
    assert study.patient.mrn == "MRN-SCP1"
    assert study.patient.name == "Doe Jane"  # PatientName, as the app shows it
    assert study.patient.sex == "F"
    assert str(study.patient.birth_date) == "1970-01-01"
    assert study.uploaded_by.username == "dicom-scp"
    assert not study.uploaded_by.is_active
    images = list(study.images.order_by("pk"))
    assert [i.sop_instance_uid for i in images] == [pa.SOPInstanceUID, lateral.SOPInstanceUID]
    assert Prediction.objects.filter(image__study=study).count() == 2
    events = AuditEvent.objects.filter(action=AuditEvent.Action.UPLOAD).order_by("pk")
    assert [e.detail["calling_ae"] for e in events] == ["MODALITY1", "MODALITY1"]
    assert all(
        e.detail["via"] == "dicom" and e.detail["peer"].startswith("127.0.0.1:") for e in events
    )
    assert {e.username for e in events} == {"dicom-scp"}


def test_an_instance_sent_again_is_acknowledged_and_not_stored_twice(scp):
    ds = instance(seed=3, patient_id="MRN-SCP2")
    assert scp.send(ds)[0].status == 0
    assert scp.send(ds)[0].status == 0  # e.g. the sender resends after a dropped association
    assert Image.objects.count() == 1
    assert AuditEvent.objects.filter(detail__duplicate=True).count() == 1


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"modality": "CT"}, "modality_refused"),
        ({"body_part": "KNEE"}, "body_part_refused"),
    ],
)
def test_what_is_not_a_chest_radiograph_is_refused_with_a_reason(scp, fields, code):
    sent = scp.send(instance(seed=4, patient_id="MRN-SCP3", **fields), calling_aet="CTSCANNER")
    assert sent[0].status == 0xA900
    assert sent[0].comment.startswith(f"{code}: Refused")
    assert not Study.objects.exists() and not Image.objects.exists()
    event = AuditEvent.objects.get(action=AuditEvent.Action.UPLOAD_REJECTED)
    assert event.detail["code"] == code
    assert event.detail["calling_ae"] == "CTSCANNER"
    assert "Refused" in event.detail["reason"]


def test_a_bad_instance_fails_and_nothing_is_stored(scp):
    too_small = instance(seed=5, patient_id="MRN-SCP4", width=16, height=16)
    no_patient = instance(seed=6, patient_id="")
    good = instance(seed=7, patient_id="MRN-SCP4")
    sent = scp.send(too_small, no_patient, good)
    assert [s.status for s in sent] == [0xC000, 0xC000, 0]
    assert sent[1].comment.startswith("missing_patient_id:")
    assert Image.objects.get().sop_instance_uid == good.SOPInstanceUID
    assert AuditEvent.objects.filter(action=AuditEvent.Action.UPLOAD_REJECTED).count() == 2


def test_a_secondary_capture_of_a_chest_dx_is_taken(scp):
    ds = instance(seed=8, patient_id="MRN-SCP5", sop_class=SecondaryCaptureImageStorage)
    assert scp.send(ds)[0].status == 0
    assert Image.objects.get().sop_instance_uid == ds.SOPInstanceUID


def test_dcmtk_storescu_sends_a_file_the_scp_stores(scp, tmp_path):
    path = tmp_path / "chest.dcm"
    ds = instance(seed=9, patient_id="MRN-SCP6")
    path.write_bytes(instance_bytes(ds))
    done = subprocess.run(
        [
            "storescu",
            "-aet",
            "STORESCU",
            "-aec",
            "CXRTRIAGE",
            "127.0.0.1",
            str(scp.port),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert Image.objects.get().sop_instance_uid == ds.SOPInstanceUID


def test_only_the_allowed_calling_aes_may_associate(transactional_db, settings, tmp_path):
    from tests.conftest import TEST_BROKER_URL
    from tests.pacs.scp import ScpProcess

    process = ScpProcess(
        media=settings.MEDIA_ROOT,
        broker_url=TEST_BROKER_URL,
        log=tmp_path / "scp.log",
        CXR_DICOM_ALLOWED_CALLING_AES="PACS1, MODALITY2",
    )
    # start() checks with C-ECHO from TESTSCU, which this SCP refuses: wait on PACS1 instead.
    process.env["CXR_DICOM_ALLOWED_CALLING_AES"] += ",TESTSCU"
    process.start()
    try:
        with pytest.raises(AssertionError, match="association refused"):
            process.send(instance(seed=10, patient_id="MRN-SCP7"), calling_aet="STRANGER")
        assert (
            process.send(instance(seed=10, patient_id="MRN-SCP7"), calling_aet="PACS1")[0].status
            == 0
        )
    finally:
        process.stop()
    assert Image.objects.count() == 1


def test_an_association_aborted_after_an_ack_keeps_what_was_acknowledged(scp):
    first = instance(seed=13, patient_id="MRN-SCP8")
    assoc = scp._associate()
    assert assoc.is_established
    status = assoc.send_c_store(first)
    assert status.Status == 0
    assoc.abort()  # the sender goes away without releasing
    assert Image.objects.get().sop_instance_uid == first.SOPInstanceUID
    assert scp.echo()  # and the SCP still serves the next association


def test_sigterm_stops_the_scp_cleanly(scp):
    scp.process.terminate()
    assert scp.process.wait(timeout=20) == 0, scp.log_tail()


def test_a_patient_id_on_record_with_other_details_is_refused(scp):
    assert scp.send(instance(seed=14, patient_id="MRN-SCP9", accession="ACC-9A"))[0].status == 0
    other = instance(seed=15, patient_id="MRN-SCP9", accession="ACC-9B", patient_name="Roe^Rick")
    sent = scp.send(other)
    assert sent[0].status == 0xC000
    assert sent[0].comment.startswith("identity_mismatch:")
    assert Image.objects.count() == 1
