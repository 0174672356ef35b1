"""Several files chosen at once on the upload page, with one patient, become one study of several
images (issue #22, item 6), with and without an accession number typed."""

from __future__ import annotations

import re

import pytest

from diagnosis.models import Study
from tests.browser.conftest import sign_in, xray_files

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def shots(artifacts_dir):
    path = artifacts_dir / "grouped-upload"
    path.mkdir(exist_ok=True)
    return path


def _upload(page, live_server, files: list[str], mrn: str, accession: str = "") -> None:
    page.goto(f"{live_server.url}/studies/upload/")
    page.get_by_label("Chest X-ray").set_input_files(files)
    page.get_by_label("Patient ID (MRN)").fill(mrn)
    if accession:
        page.get_by_label("Accession number").fill(accession)
    page.get_by_role("button", name="Upload and analyse").click()
    page.wait_for_function(
        f"() => document.querySelectorAll('.file-list .fstate.ok').length === {len(files)}"
    )


@pytest.mark.parametrize("accession", ["ACC-GROUP-1", ""], ids=["typed", "generated"])
def test_three_files_at_once_become_one_study_with_three_images(
    page, live_server, radiologist, production_model, shots, tmp_path, accession
):
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on(
        "response",
        lambda r: (
            problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    sign_in(page, live_server, radiologist.username)
    _upload(page, live_server, xray_files(tmp_path, 1, 2, 3), "MRN-GROUP", accession)

    study = Study.objects.get()
    assert study.images.count() == 3
    if accession:
        assert study.accession_number == accession
    links = page.locator(".file-list .fstate.ok a")
    assert {links.nth(i).inner_text() for i in range(3)} == {study.accession_number}
    assert page.locator("[data-dicom-note]").inner_text().startswith("3 of 3 file(s) uploaded")
    page.screenshot(path=shots / f"upload-{accession or 'generated'}.png", full_page=True)

    links.first.click()
    page.wait_for_url(re.compile(rf".*/studies/{study.pk}/$"))
    page.screenshot(path=shots / f"study-{accession or 'generated'}.png", full_page=True)
    assert problems == []
