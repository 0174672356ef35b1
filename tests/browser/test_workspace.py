"""A radiologist's day in a real browser, and an admin's view of it. Screenshots of every page."""

from __future__ import annotations

import pytest

from diagnosis.models import Reading, Study
from tests import imagegen
from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_radiologists_day(
    page, live_server, radiologist, production_model, celery_worker, artifacts_dir, tmp_path
):
    shots = artifacts_dir / "workspace"
    shots.mkdir(exist_ok=True)
    sign_in(page, live_server, radiologist.username)

    # Several files at once, with per-file progress and errors.
    files = []
    for name, data in [
        ("pa.png", imagegen.png_bytes(imagegen.make_xray(600, 560, seed=1))),
        ("second.jpg", imagegen.jpeg_bytes(imagegen.make_xray(500, 500, seed=2))),
        ("notes.png", imagegen.text_named_png()),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        files.append(str(path))
    page.goto(f"{live_server.url}/studies/upload/")
    page.get_by_label("Chest X-ray").set_input_files(files)
    page.get_by_label("Patient ID (MRN)").fill("DAY-1")
    page.get_by_role("button", name="Upload and analyse").click()
    page.wait_for_selector("#upload-file-2 .fstate.err")
    # Functions, not expressions: the Content-Security-Policy refuses Playwright's eval of one.
    page.wait_for_function("() => document.querySelectorAll('.fstate.ok').length === 2")
    assert "PNG, JPEG" in page.locator("#upload-file-2 .fstate").inner_text()
    page.screenshot(path=shots / "01-upload-several.png", full_page=True)
    # Files sent together for one patient are one study with several views (issue #22 item 6).
    assert Study.objects.filter(patient__mrn="DAY-1").count() == 1
    assert Study.objects.get(patient__mrn="DAY-1").images.count() == 2

    # A DICOM file fills the form from its tags.
    dicom = tmp_path / "scan.dcm"
    dicom.write_bytes(imagegen.dicom_bytes(patient_id="DCM-77", accession="ACC-77", view="AP"))
    page.goto(f"{live_server.url}/studies/upload/")
    page.get_by_label("Chest X-ray").set_input_files(str(dicom))
    page.wait_for_function("() => document.getElementById('id_patient_id').value === 'DCM-77'")
    assert page.get_by_label("Accession number").input_value() == "ACC-77"
    page.screenshot(path=shots / "02-upload-dicom-filled.png", full_page=True)

    # The worklist refreshes itself as predictions finish.
    page.goto(f"{live_server.url}/")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#worklist .status')].filter("
        "e => e.textContent.trim() === 'Done').length >= 1",
        timeout=90_000,
    )
    page.screenshot(path=shots / "03-worklist.png", full_page=True)

    # The study: heatmap opacity, zoom, another class's heatmap, then a signed reading.
    study = Study.objects.filter(patient__mrn="DAY-1").order_by("pk").first()
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    page.wait_for_selector("[data-status='done']", timeout=90_000)
    view = page.get_by_role("region", name="Image 1")  # the first of the study's two views
    view.get_by_label("Opacity").fill("40")
    view.get_by_role("button", name="Zoom in").click()
    view.get_by_role("button", name="Zoom in").click()
    transform = page.locator(".stage").first.evaluate("e => e.style.transform")
    assert "scale(1.5625)" in transform
    view.get_by_label("Contrast").fill("160")
    prediction = study.images.order_by("pk").first().predictions.get()
    other = next(c for c in production_model.class_labels if c != prediction.cam_class)
    view.get_by_label("Class", exact=True).select_option(other)
    page.wait_for_function(
        f"() => {{ const o = [...document.querySelectorAll('[data-heatmap-class] option')]"
        f".find(o => o.value === {other!r}); return o && o.dataset.src; }}",
        timeout=90_000,
    )
    page.wait_for_function(
        "() => document.querySelector('.stage .heatmap').src.includes('/heatmaps/')"
    )
    # the zoom and the window survive the refresh that brought the new heatmap
    assert "scale(1.5625)" in page.locator(".stage").first.evaluate("e => e.style.transform")
    page.screenshot(path=shots / "04-study-viewer.png", full_page=True)

    page.get_by_role("radio", name="Override").check()
    page.get_by_label("Final label (when you override)").select_option("other")
    page.get_by_label("Notes").fill("Small left apical pneumothorax.")
    page.get_by_role("button", name="Sign reading").click()
    page.wait_for_selector(".current-reading")
    assert Reading.objects.get(study=study).final_label == "other"
    page.screenshot(path=shots / "05-study-signed.png", full_page=True)

    # The printable report and its PDF.
    page.get_by_role("link", name="Report").click()
    page.wait_for_selector("h1")
    assert "Small left apical pneumothorax." in page.content()
    page.emulate_media(media="print")
    page.screenshot(path=shots / "06-report-print.png", full_page=True)
    page.emulate_media(media="screen")
    pdf = page.request.get(f"{live_server.url}/studies/{study.pk}/report.pdf")
    assert pdf.ok and pdf.body().startswith(b"%PDF")

    # Another role's page is refused.
    denied = page.goto(f"{live_server.url}/audit/")
    assert denied.status == 403
    page.screenshot(path=shots / "07-radiologist-denied-audit.png", full_page=True)


def test_an_admin_reads_the_audit_trail_and_agreement(
    page, live_server, admin_user, radiologist, artifacts_dir
):
    shots = artifacts_dir / "workspace"
    shots.mkdir(exist_ok=True)
    sign_in(page, live_server, admin_user.username)
    page.goto(f"{live_server.url}/audit/")
    assert page.get_by_role("heading", name="Audit trail").is_visible()
    assert page.locator("table td", has_text="Signed in").first.is_visible()
    page.screenshot(path=shots / "08-admin-audit.png", full_page=True)
    page.goto(f"{live_server.url}/agreement/")
    page.screenshot(path=shots / "09-admin-agreement.png", full_page=True)
    assert page.get_by_role(
        "heading", name="Agreement between the model and the radiologists"
    ).is_visible()
