"""The core loop in a real browser: sign in, upload, watch the study page update, use the heatmap."""

from __future__ import annotations

import re

import pytest

from diagnosis.models import Study
from tests import imagegen
from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_upload_then_the_study_page_updates_itself_and_the_heatmap_opacity_moves(
    page, live_server, radiologist, production_model, celery_worker, artifacts_dir, tmp_path
):
    sign_in(page, live_server, radiologist.username)
    page.screenshot(path=artifacts_dir / "worklist-empty.png", full_page=True)

    xray = tmp_path / "chest.png"
    xray.write_bytes(imagegen.png_bytes(imagegen.make_xray(512, 480, seed=4)))
    page.goto(f"{live_server.url}/studies/upload/")
    page.get_by_label("Chest X-ray").set_input_files(str(xray))
    page.get_by_label("Patient ID (MRN)").fill("BROWSER-1")
    page.screenshot(path=artifacts_dir / "upload-form.png", full_page=True)
    page.get_by_role("button", name="Upload and analyse").click()

    page.wait_for_url(re.compile(r".*/studies/\d+/$"))
    study = Study.objects.get(patient__mrn="BROWSER-1")
    assert page.url == f"{live_server.url}/studies/{study.pk}/"
    assert page.locator("[data-status]").first.get_attribute("data-status") in (
        "queued",
        "running",
        "done",
    )
    # No reload from here on: the page polls and replaces its results panel itself.
    page.wait_for_selector("[data-status='done']", timeout=90_000)
    prediction = study.images.get().predictions.get()
    # The reading form follows: agreeing with the model, its classes to override with.
    page.get_by_label("Agree with the model").wait_for(timeout=10_000)
    labels = page.locator("#reading select option").all_inner_texts()
    assert set(production_model.class_labels) <= set(labels)
    assert page.get_by_text(f"This image: {prediction.label}").is_visible()
    assert page.locator("[data-study-label]").inner_text() == prediction.label
    assert page.get_by_text(production_model.name).first.is_visible()
    assert page.get_by_text("does not replace, a radiologist").first.is_visible()

    heatmap = page.locator(".stage .heatmap")
    heatmap.wait_for(state="visible")
    page.wait_for_function(
        "() => { const i = document.querySelector('.stage .heatmap');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    slider = page.get_by_label("Opacity")
    slider.fill("25")
    assert heatmap.evaluate("(img) => img.style.opacity") == "0.25"
    page.get_by_label("Heatmap").uncheck()
    assert heatmap.is_hidden()
    page.get_by_label("Heatmap").check()
    slider.fill("70")
    page.screenshot(path=artifacts_dir / "study-page.png", full_page=True)
    assert (artifacts_dir / "study-page.png").stat().st_size > 10_000

    page.goto(f"{live_server.url}/")
    assert page.get_by_role("link", name="BROWSER-1").is_visible()
    page.screenshot(path=artifacts_dir / "worklist.png", full_page=True)


def test_a_bad_file_shows_a_clear_error_on_the_upload_page(
    page, live_server, radiologist, artifacts_dir, tmp_path
):
    sign_in(page, live_server, radiologist.username)
    fake = tmp_path / "not-an-xray.png"
    fake.write_bytes(imagegen.text_named_png())
    page.goto(f"{live_server.url}/studies/upload/")
    page.get_by_label("Chest X-ray").set_input_files(str(fake))
    page.get_by_label("Patient ID (MRN)").fill("BROWSER-BAD")
    page.get_by_role("button", name="Upload and analyse").click()
    error = page.locator("#upload-file-0 .fstate.err")
    error.wait_for()
    assert "PNG, JPEG" in error.inner_text()
    page.screenshot(path=artifacts_dir / "upload-error.png", full_page=True)
    assert not Study.objects.exists()


def test_a_reading_started_before_the_result_is_kept_and_told_the_result_arrived(
    page,
    live_server,
    radiologist,
    production_model,
    celery_worker,
    artifacts_dir,
    tmp_path,
    settings,
):
    """The model takes 3 s over a file named slow-* (fault injection): the page opens while it
    works. An untouched reading form is replaced by one that can agree with the model; one the
    radiologist has started keeps what they typed and says the result has arrived."""
    settings.CXR_FAULT_INJECTION = True
    sign_in(page, live_server, radiologist.username)
    for mrn, typed in (("WAIT-QUIET", ""), ("WAIT-TYPING", "Left basal opacity")):
        xray = tmp_path / f"slow-{mrn}.png"
        xray.write_bytes(imagegen.png_bytes(imagegen.make_xray(256, 256, seed=7)))
        page.goto(f"{live_server.url}/studies/upload/")
        page.get_by_label("Chest X-ray").set_input_files(str(xray))
        page.get_by_label("Patient ID (MRN)").fill(mrn)
        page.get_by_role("button", name="Upload and analyse").click()
        page.wait_for_url(re.compile(r".*/studies/\d+/$"))
        assert page.get_by_label("Read without a model result").is_visible()
        if typed:
            page.get_by_label("Notes").fill(typed)
        page.wait_for_selector("[data-status='done']", timeout=90_000)
        if not typed:
            page.get_by_label("Agree with the model").wait_for(timeout=10_000)
            continue
        page.get_by_text("The model's result has arrived").wait_for(timeout=10_000)
        assert page.get_by_label("Notes").input_value() == typed
        page.screenshot(path=artifacts_dir / "reading-result-arrived.png", full_page=True)
