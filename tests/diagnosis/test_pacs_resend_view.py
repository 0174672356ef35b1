"""The study page's Re-send button for a DICOM object that failed to reach the PACS: admins only,
through the service `manage.py pacs_resend` uses (back to pending, queued after commit), audited."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from cxrweb.audit.models import AuditEvent
from diagnosis.dispatch import SEND_TO_PACS
from diagnosis.models import PacsExport
from tests.conftest import _user
from tests.diagnosis.conftest import upload_view as _image

PACS = "http://pacs.example.org/dicom-web"


@pytest.fixture
def failed(radiologist, settings) -> PacsExport:
    settings.CXR_PACS_URL = PACS
    upload = _image(radiologist, "PX-1", "ACC-PX-1", seed=61)
    return PacsExport.objects.create(
        study=upload.study,
        kind=PacsExport.Kind.SR,
        trigger=PacsExport.Trigger.RESULT,
        result_key="result:1",
        status=PacsExport.Status.FAILED,
        attempts=5,
        last_error="STOW-RS: 503 Service Unavailable",
        destination="http://old-pacs/dicom-web",
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
    )


@pytest.fixture
def site_admin(db):
    """An admin by role (not a superuser)."""
    return _user("siteadmin", "admin")


def _resend(client, export, capture):
    with capture(execute=True):
        return client.post(f"/pacs-exports/{export.pk}/resend/")


def test_a_radiologist_may_not_resend(
    failed, rad_client, sent_tasks, django_capture_on_commit_callbacks
):
    response = _resend(rad_client, failed, django_capture_on_commit_callbacks)
    assert response.status_code == 403
    failed.refresh_from_db()
    assert failed.status == PacsExport.Status.FAILED and failed.attempts == 5
    assert sent_tasks == []
    assert AuditEvent.objects.filter(action=AuditEvent.Action.ACCESS_DENIED).exists()
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.PACS_RESENT).exists()
    page = rad_client.get(f"/studies/{failed.study_id}/").content.decode()
    assert "Failed: STOW-RS: 503 Service Unavailable" in page
    assert "data-pacs-resend" not in page


def test_an_admin_resends_a_failed_export(
    failed, client, site_admin, sent_tasks, django_capture_on_commit_callbacks
):
    client.force_login(site_admin)
    page = client.get(f"/studies/{failed.study_id}/").content.decode()
    assert f'action="/pacs-exports/{failed.pk}/resend/"' in page and "data-pacs-resend" in page
    response = _resend(client, failed, django_capture_on_commit_callbacks)
    assert response.status_code == 302
    assert response["Location"] == f"/studies/{failed.study_id}/#pacs-exports"
    failed.refresh_from_db()
    assert failed.status == PacsExport.Status.PENDING and failed.attempts == 0
    assert failed.destination == PACS
    assert [(t.name, t.args) for t in sent_tasks] == [(SEND_TO_PACS, (failed.pk,))]
    event = AuditEvent.objects.get(action=AuditEvent.Action.PACS_RESENT)
    assert event.user == site_admin and event.patient_mrn == "PX-1"
    assert event.object_type == "PacsExport" and event.object_id == str(failed.pk)
    assert event.detail == {"export": failed.pk, "kind": "sr", "study": failed.study_id}
    page = client.get(f"/studies/{failed.study_id}/").content.decode()
    assert "Structured report queued to be sent to the PACS again." in page
    assert "Waiting to be sent" in page and "data-pacs-resend" not in page


def test_an_export_that_has_not_failed_is_not_sent_again(
    failed, client, site_admin, sent_tasks, django_capture_on_commit_callbacks
):
    PacsExport.objects.filter(pk=failed.pk).update(status=PacsExport.Status.SENT)
    client.force_login(site_admin)
    response = _resend(client, failed, django_capture_on_commit_callbacks)
    assert response.status_code == 302
    assert sent_tasks == []
    assert PacsExport.objects.get(pk=failed.pk).status == PacsExport.Status.SENT
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.PACS_RESENT).exists()
    assert client.post("/pacs-exports/999999/resend/").status_code == 404


def test_nothing_is_queued_while_sending_is_off(
    failed, client, site_admin, settings, sent_tasks, django_capture_on_commit_callbacks
):
    settings.CXR_PACS_URL = ""
    settings.CXR_PACS_AE = ""
    client.force_login(site_admin)
    response = _resend(client, failed, django_capture_on_commit_callbacks)
    assert response.status_code == 302
    assert sent_tasks == []
    assert PacsExport.objects.get(pk=failed.pk).status == PacsExport.Status.FAILED
    page = client.get(f"/studies/{failed.study_id}/").content.decode()
    assert "Sending to the PACS is off: set CXR_PACS_URL or CXR_PACS_AE." in page


def test_resend_takes_a_post_with_its_csrf_token(failed, site_admin, sent_tasks):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(site_admin)
    assert client.get(f"/pacs-exports/{failed.pk}/resend/").status_code == 405
    assert client.post(f"/pacs-exports/{failed.pk}/resend/").status_code == 403  # no token
    assert PacsExport.objects.get(pk=failed.pk).status == PacsExport.Status.FAILED
    assert sent_tasks == []
    assert client.post("/pacs-exports/999999/resend/").status_code == 403
