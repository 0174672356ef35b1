"""The study-level result in a real browser: one flagged result for a study of two views, red
only for the abnormal class over its threshold, a failed STAT study first in the worklist, and an
agreeing reading that signs the shown label."""

from __future__ import annotations

import pytest

from diagnosis.models import Study
from tests.browser.conftest import sign_in
from tests.diagnosis.conftest import (
    fail_prediction,
    finish_prediction,
    pneumonia_model,  # noqa: F401 - the fixture
    upload_view,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_two_view_study_shows_and_signs_one_result(
    page,
    live_server,
    radiologist,
    pneumonia_model,  # noqa: F811 - the fixture imported above
    artifacts_dir,
):
    first = upload_view(radiologist, "SR-1", "ACC-SR-1", seed=61)
    second = upload_view(radiologist, "SR-1", "ACC-SR-1", seed=62)
    finish_prediction(first.prediction, pneumonia_model, {"NORMAL": 0.59, "PNEUMONIA": 0.41})
    finish_prediction(second.prediction, pneumonia_model, {"NORMAL": 0.35, "PNEUMONIA": 0.65})
    routine = upload_view(radiologist, "SR-2", "ACC-SR-2", seed=63)
    finish_prediction(routine.prediction, pneumonia_model, {"NORMAL": 0.967, "PNEUMONIA": 0.033})
    failed = upload_view(radiologist, "SR-3", "ACC-SR-3", seed=64, priority=Study.Priority.STAT)
    fail_prediction(failed.prediction, pneumonia_model)

    sign_in(page, live_server, radiologist.username)
    page.screenshot(path=artifacts_dir / "study-result-worklist.png", full_page=True)
    rows = page.locator("table.worklist tbody tr")
    assert rows.nth(0).get_attribute("data-study-id") == str(failed.study.pk)
    assert "needs attention" in rows.nth(0).inner_text()
    assert rows.nth(1).get_attribute("data-study-id") == str(first.study.pk)
    assert "PNEUMONIA" in rows.nth(1).inner_text() and "flagged" in rows.nth(1).inner_text()
    assert "NORMAL" in rows.nth(2).inner_text() and "flagged" not in rows.nth(2).inner_text()

    page.goto(f"{live_server.url}/studies/{first.study.pk}/")
    panel = page.locator(".study-result")
    assert panel.locator("[data-study-label]").inner_text() == "PNEUMONIA"
    assert "flagged" in panel.inner_text()
    red = "rgb(164, 22, 26)"  # --danger
    bar_colour = "(el) => getComputedStyle(el.querySelector('.bar')).backgroundColor"
    assert panel.locator("li", has_text="PNEUMONIA").evaluate(bar_colour) == red
    assert panel.locator("li", has_text="NORMAL").evaluate(bar_colour) != red
    assert page.locator("[data-shown-label]").inner_text() == "PNEUMONIA"
    page.screenshot(path=artifacts_dir / "study-result-two-views.png", full_page=True)

    page.get_by_label("Agree with the model").check()
    page.get_by_role("button", name="Sign reading").click()
    page.wait_for_selector(".current-reading")
    assert "Final label: PNEUMONIA" in page.locator(".current-reading").inner_text()
    assert first.study.readings.get().final_label == "PNEUMONIA"

    page.goto(f"{live_server.url}/studies/{routine.study.pk}/")
    assert page.locator(".probs li.over").count() == 0  # a confident normal is never red
    page.screenshot(path=artifacts_dir / "study-result-confident-normal.png", full_page=True)
