"""The study page shows what was sent to the PACS: sent ✓ for the result's SR and SC (sent to the
real Orthanc), retrying with the reason for a reading's while the PACS is down."""

from __future__ import annotations

import pytest

from diagnosis import services
from diagnosis.models import PacsExport
from tests.browser.conftest import sign_in
from tests.conftest import wait_for
from tests.orthanc import free_port
from tests.pacs.conftest import pneumonia_study_to_pacs

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_the_study_page_shows_sent_and_retrying_pacs_objects(
    page, live_server, orthanc, settings, pneumonia_model, celery_worker, radiologist, artifacts_dir
):
    settings.CXR_PACS_URL = orthanc.dicomweb
    settings.CXR_PACS_SEND_ON = "both"
    study = pneumonia_study_to_pacs(
        radiologist, pneumonia_model, seed=11, mrn="MRN-PAGE", acc="ACC-PAGE"
    )
    wait_for(lambda: study.pacs_exports.filter(status="sent").count() == 2, what="the result sent")

    settings.CXR_PACS_URL = f"http://127.0.0.1:{free_port()}/dicom-web"  # the PACS goes down
    settings.CXR_PACS_RETRY_S = 300
    services.reading_sign(study=study, radiologist=radiologist, final_label="PNEUMONIA")
    wait_for(
        lambda: study.pacs_exports.filter(trigger="reading", attempts=1).count() == 2,
        what="the reading's first try",
    )

    sign_in(page, live_server, radiologist.username)
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    table = page.locator("#pacs-exports")
    table.wait_for()
    assert table.locator("tr.pacs-sent").count() == 2
    assert table.locator("tr.pacs-retrying").count() == 2
    assert "Sent to PACS ✓" in table.inner_text()
    assert "Retrying (attempt 1 failed: STOW-RS" in table.inner_text()
    assert PacsExport.objects.filter(study=study, status="pending").count() == 2
    table.scroll_into_view_if_needed()
    page.screenshot(path=artifacts_dir / "study-pacs-status.png", full_page=True)
