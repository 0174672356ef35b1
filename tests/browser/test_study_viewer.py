"""The study page on a 1280×720 screen, its keyboard shortcuts, an empty class heatmap, and the
refused (403) page, in a real browser."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from diagnosis import selectors, services
from diagnosis.models import ClassHeatmap, Study
from diagnosis.worker.heatmaps import EMPTY_CAM_NOTE, class_heatmap_run
from diagnosis.worker.run import prediction_run
from tests import imagegen
from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _read_study(user, mrn: str, **kw) -> Study:
    """A one-image study whose analysis has finished (run here, in the test's process)."""
    result = services.study_upload(
        uploaded_by=user,
        patient_id=mrn,
        **kw,
        data=imagegen.png_bytes(imagegen.make_xray(512, 480, seed=3)),
    )
    done = prediction_run(prediction_id=result.prediction.pk)
    assert done.status == "done", done.error
    return result.study


@pytest.fixture
def studies(radiologist, production_model, _broker) -> list[Study]:
    made = [
        _read_study(radiologist, f"KEYS-{i}", priority=p)
        for i, p in enumerate((Study.Priority.ROUTINE, Study.Priority.STAT, Study.Priority.URGENT))
    ]
    return made


def _worklist_order() -> list[int]:
    return list(selectors.worklist().values_list("pk", flat=True))


def _within(page, locator) -> bool:
    box = locator.bounding_box()
    size = page.viewport_size
    return (
        box is not None
        and box["y"] >= 0
        and box["x"] >= 0
        and box["y"] + box["height"] <= size["height"]
        and box["x"] + box["width"] <= size["width"]
    )


def test_a_one_image_study_fits_a_1280x720_screen(
    browser, live_server, radiologist, studies, artifacts_dir
):
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    try:
        sign_in(page, live_server, radiologist.username)
        page.goto(f"{live_server.url}/studies/{studies[0].pk}/")
        page.wait_for_function(
            "() => { const i = document.querySelector('.stage .xray');"
            " return i && i.complete && i.naturalWidth > 0; }"
        )
        page.screenshot(path=artifacts_dir / "study-1280x720.png")
        assert page.evaluate("window.scrollY") == 0
        sign = page.get_by_role("button", name="Sign reading")
        for what in (
            sign,
            page.get_by_label("Agree with the model"),
            page.get_by_label("Heatmap"),
            page.get_by_label("Opacity"),
            page.get_by_label("Class", exact=True),
            page.locator(".stage .xray"),
            page.get_by_role("button", name="Zoom in"),
        ):
            assert what.is_visible() and _within(page, what), what
    finally:
        context.close()


def test_keyboard_shortcuts_follow_the_worklist_and_never_fire_while_typing(
    page, live_server, radiologist, studies, artifacts_dir
):
    order = _worklist_order()
    assert sorted(order) == sorted(s.pk for s in studies)
    sign_in(page, live_server, radiologist.username)
    page.goto(f"{live_server.url}/studies/{order[0]}/")
    assert page.get_by_text("next / previous study in the worklist").is_visible()

    page.keyboard.press("j")
    page.wait_for_url(f"{live_server.url}/studies/{order[1]}/")
    page.keyboard.press("j")
    page.wait_for_url(f"{live_server.url}/studies/{order[2]}/")
    page.keyboard.press("j")  # the last one: it says so and stays
    page.get_by_text("This is the last study in the worklist.").wait_for()
    page.keyboard.press("k")
    page.wait_for_url(f"{live_server.url}/studies/{order[1]}/")

    heatmap = page.locator(".stage .heatmap")
    heatmap.wait_for(state="visible")
    page.keyboard.press("o")
    assert heatmap.is_hidden() and not page.get_by_label("Heatmap").is_checked()
    page.keyboard.press("o")
    assert heatmap.is_visible()

    page.keyboard.press("v")
    assert page.get_by_role("radio", name="Override").is_checked()
    assert page.evaluate("document.activeElement.name") == "final_label"
    page.keyboard.press("Escape")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("a")
    assert page.get_by_label("Agree with the model").is_checked()
    assert page.evaluate("document.activeElement.textContent.trim()") == "Sign reading"

    notes = page.get_by_label("Notes")
    notes.click()
    page.keyboard.type("jkova")  # typing in a text field: text, not shortcuts
    assert notes.input_value() == "jkova"
    assert page.url == f"{live_server.url}/studies/{order[1]}/"
    assert page.get_by_label("Agree with the model").is_checked()
    assert heatmap.is_visible()
    page.screenshot(path=artifacts_dir / "study-keys.png")


def test_an_empty_class_heatmap_says_so(
    page, live_server, radiologist, studies, monkeypatch, artifacts_dir
):
    from diagnosis.worker import compute

    study = studies[0]
    prediction = selectors.study_predictions(study)[0]
    other = next(c for c in prediction.model_version.class_labels if c != prediction.cam_class)
    heatmap = services.class_heatmap_request(prediction=prediction, class_label=other)
    real = compute.predictor_for

    class Flat:  # the real model, whose map for this class comes back empty
        def __init__(self, predictor):
            self._p = predictor
            self.preprocessing = predictor.preprocessing

        def predict(self, images, **kw):
            return [
                dataclasses.replace(r, cam=np.zeros_like(r.cam))
                for r in self._p.predict(images, **kw)
            ]

    monkeypatch.setattr(compute, "predictor_for", lambda v: Flat(real(v)))
    heatmap = class_heatmap_run(heatmap_id=heatmap.pk)
    assert heatmap.status == ClassHeatmap.Status.DONE and heatmap.error == EMPTY_CAM_NOTE

    sign_in(page, live_server, radiologist.username)
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    select = page.get_by_label("Class", exact=True)
    assert f"{other} (empty)" in select.inner_text()
    select.select_option(other)
    note = page.locator(".cam-empty")
    note.wait_for(state="visible")
    assert "attention for this class is empty" in note.inner_text()
    page.screenshot(path=artifacts_dir / "study-empty-heatmap.png")
    select.select_option(prediction.cam_class)
    assert note.is_hidden()


def test_a_user_without_a_role_sees_the_refused_page_and_can_sign_out(
    page, live_server, outsider, artifacts_dir
):
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("User name").fill(outsider.username)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Access refused").wait_for()
    assert page.get_by_text("ask an administrator to give your account a role").is_visible()
    page.screenshot(path=artifacts_dir / "forbidden.png", full_page=True)
    page.locator("main").get_by_role("button", name="Sign out").click()
    page.wait_for_load_state()
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url


def test_the_audit_trail_reads_as_key_value_lines(
    page, live_server, admin_user, studies, artifacts_dir
):
    sign_in(page, live_server, admin_user.username)
    page.goto(f"{live_server.url}/audit/")
    detail = page.locator("td dl.detail").first
    detail.wait_for()
    assert page.locator("dl.detail dt", has_text="view").first.is_visible()
    assert "{'" not in page.locator("table").inner_text()  # no raw Python dicts
    page.screenshot(path=artifacts_dir / "audit-trail.png")


def test_j_and_k_follow_the_worklists_filter(
    page, live_server, radiologist, studies, artifacts_dir
):
    """Opened from a filtered worklist, j and k move through that list only."""
    other = _read_study(radiologist, "OTHER-9", priority=Study.Priority.STAT)  # same picture
    full = _worklist_order()
    listed = list(selectors.worklist(q="KEYS").values_list("pk", flat=True))
    assert other.pk not in listed and len(listed) == 3
    assert full.index(other.pk) == full.index(listed[0]) + 1  # between two of the filter's
    sign_in(page, live_server, radiologist.username)
    page.goto(f"{live_server.url}/?q=KEYS")
    page.locator(f"a[href='/studies/{listed[0]}/']").first.click()
    page.wait_for_url(f"{live_server.url}/studies/{listed[0]}/")
    page.keyboard.press("j")
    page.wait_for_url(f"{live_server.url}/studies/{listed[1]}/")  # OTHER-9 skipped
    page.keyboard.press("j")
    page.wait_for_url(f"{live_server.url}/studies/{listed[2]}/")
    page.keyboard.press("j")
    page.get_by_text("This is the last study in the filtered worklist.").wait_for()
    page.screenshot(path=artifacts_dir / "study-keys-filtered.png")

    page.goto(f"{live_server.url}/")  # the whole worklist again: j follows it
    page.goto(f"{live_server.url}/studies/{listed[0]}/")
    page.keyboard.press("j")
    page.wait_for_url(f"{live_server.url}/studies/{other.pk}/")
