"""An admin sees the instances the SCP refused in the audit trail (/audit/), the sender's text
shown as text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.browser.conftest import sign_in
from tests.pacs.scp import instance

pytestmark = [pytest.mark.browser, pytest.mark.integration]

HOSTILE = "<B>X</B>"  # a Modality a sender controls (CS: upper case, 16 characters at most)


def test_an_admin_finds_the_refused_instances_in_the_audit_trail(
    page, live_server, admin_user, scp, artifacts_dir
):
    sent = scp.send(
        instance(seed=30, patient_id="MRN-AUD1", modality=HOSTILE),
        instance(seed=31, patient_id="MRN-AUD1", body_part="KNEE"),
        calling_aet="CTSCANNER",
    )
    assert [s.status for s in sent] == [0xA900, 0xA900]

    sign_in(page, live_server, admin_user.username)
    page.goto(f"{live_server.url}/audit/?action=upload_rejected")
    body = page.locator("main").inner_text()
    assert "modality_refused" in body and "body_part_refused" in body
    assert "CTSCANNER" in body and "dicom-scp" in body and "127.0.0.1" in body  # peer
    assert HOSTILE in body  # shown as the characters it is made of
    assert page.locator("main b", has_text="X").count() == 0  # never as markup
    shot = artifacts_dir / "dicom-refused-audit.png"
    page.screenshot(path=shot, full_page=True)
    shots = Path("/tmp/shots6")
    if shots.is_dir():
        shutil.copy(shot, shots / shot.name)
