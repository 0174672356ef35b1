"""Re-send from the study page, in a real browser: the PACS was down, the result's objects failed;
once it is back, an admin clicks Re-send and the worker sends the object to the real Orthanc."""

from __future__ import annotations

import pytest

from cxrweb.audit.models import AuditEvent
from diagnosis.models import PacsExport
from tests.browser.conftest import sign_in
from tests.conftest import _user, wait_for
from tests.orthanc import free_port
from tests.pacs.conftest import pneumonia_study_to_pacs

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_an_admin_resends_a_failed_object_from_the_study_page(
    page, live_server, orthanc, settings, pneumonia_model, celery_worker, radiologist, artifacts_dir
):
    settings.CXR_PACS_URL = f"http://127.0.0.1:{free_port()}/dicom-web"  # the PACS is down
    settings.CXR_PACS_SEND_ON = "result"
    settings.CXR_PACS_MAX_ATTEMPTS = 1
    study = pneumonia_study_to_pacs(
        radiologist, pneumonia_model, seed=12, mrn="MRN-RESEND", acc="ACC-RESEND"
    )
    wait_for(lambda: study.pacs_exports.filter(status="failed").count() == 2, what="both failed")

    # A radiologist sees the failure, and no button.
    sign_in(page, live_server, radiologist.username)
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    table = page.locator("#pacs-exports")
    assert table.locator("tr.pacs-failed").count() == 2
    assert table.locator("[data-pacs-resend]").count() == 0
    page.context.clear_cookies()

    settings.CXR_PACS_URL = orthanc.dicomweb  # the PACS is back
    admin = _user("siteadmin", "admin")
    sign_in(page, live_server, admin.username)
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    table = page.locator("#pacs-exports")
    assert table.locator("[data-pacs-resend]").count() == 2
    table.screenshot(path=artifacts_dir / "pacs-resend-failed.png")

    sr = study.pacs_exports.get(kind=PacsExport.Kind.SR)
    table.locator(f"form[action='/pacs-exports/{sr.pk}/resend/'] button").click()
    page.wait_for_url(f"{live_server.url}/studies/{study.pk}/#pacs-exports")
    assert "Structured report queued to be sent to the PACS again." in page.inner_text("body")
    page.screenshot(path=artifacts_dir / "pacs-resend-study.png", full_page=True)
    wait_for(
        lambda: PacsExport.objects.get(pk=sr.pk).status == PacsExport.Status.SENT,
        what="the SR sent again",
    )
    found = orthanc.post(
        "/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": sr.sop_instance_uid}}
    )
    assert len(found) == 1  # the same instance the first try meant to send
    page.reload()
    table = page.locator("#pacs-exports")
    assert table.locator("tr.pacs-sent").count() == 1
    assert "Sent to PACS ✓" in table.locator("tr.pacs-sent").inner_text()
    assert table.locator("tr.pacs-failed [data-pacs-resend]").count() == 1  # the SC still failed
    table.screenshot(path=artifacts_dir / "pacs-resend-sent.png")
    event = AuditEvent.objects.get(action=AuditEvent.Action.PACS_RESENT)
    assert event.username == "siteadmin" and event.patient_mrn == "MRN-RESEND"
