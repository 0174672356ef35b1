"""The live worklist in a real browser (issue #22 item 4): a STAT study a colleague sends through
the API appears within seconds with an "N new" marker, without a reload, and the reader keeps
their place (the rows on screen stay put, the focused link keeps its focus)."""

from __future__ import annotations

import time

import pytest

from diagnosis.models import Study
from tests import imagegen
from tests.browser.conftest import sign_in
from tests.diagnosis.conftest import upload_view

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MARKER = "[data-live-new-button]"


def _top(page, mrn: str) -> float:
    """Where the row of patient `mrn` is on the screen (px from the viewport's top)."""
    return page.locator("table.worklist tbody tr", has_text=mrn).bounding_box()["y"]


def test_a_stat_study_from_the_api_appears_live_and_the_reader_keeps_their_place(
    page, browser, live_server, radiologist, second_radiologist, artifacts_dir
):
    from cxrweb.apitokens.models import ApiToken

    for n in range(20):  # routine studies waiting for a model: more than a screen of rows
        upload_view(radiologist, f"ROUT-{n:02}", f"ACC-ROUT-{n:02}", seed=200 + n)
    token = ApiToken.objects.create(user=second_radiologist)[1]

    page.set_viewport_size({"width": 1280, "height": 720})
    sign_in(page, live_server, radiologist.username)
    page.screenshot(path=artifacts_dir / "live-worklist-0-open.png")
    page.evaluate("() => window.scrollTo(0, 500)")
    assert page.evaluate("() => window.scrollY") == 500, page.evaluate(
        "() => document.documentElement.scrollHeight"
    )
    reading = page.get_by_role("link", name="ROUT-09", exact=True)
    reading.focus()
    before_scroll = page.evaluate("() => window.scrollY")
    before_top = _top(page, "ROUT-08")
    assert 0 < before_top < 720
    page.evaluate("() => { window.cxrNotReloaded = true; }")
    assert page.locator("[data-live-new]").is_hidden()

    # A colleague's STAT study, through the API with their own token.
    colleague = browser.new_context()
    try:
        sent = time.monotonic()
        response = colleague.request.post(
            f"{live_server.url}/api/v1/studies/",
            headers={"Authorization": f"Token {token}"},
            multipart={
                "image": {
                    "name": "stat.png",
                    "mimeType": "image/png",
                    "buffer": imagegen.png_bytes(seed=299),
                },
                "patient_id": "STAT-LIVE",
                "priority": str(Study.Priority.STAT),
            },
        )
        assert response.status == 201, response.text()
    finally:
        colleague.close()

    page.wait_for_function(
        "() => { const b = document.querySelector('[data-live-new-button]');"
        " return b && !b.closest('[hidden]') && b.textContent === '1 new'; }",
        timeout=15_000,
    )
    arrived_after = time.monotonic() - sent
    assert arrived_after < 10, f"the study took {arrived_after:.1f} s to show"
    page.screenshot(path=artifacts_dir / "live-worklist-1-new.png")
    page.screenshot(path=artifacts_dir / "live-worklist-1-new-full.png", full_page=True)

    assert page.evaluate("() => window.cxrNotReloaded === true")  # no reload
    stat = page.locator("table.worklist tbody tr", has_text="STAT-LIVE")
    assert stat.get_attribute("class").split().count("row-new") == 1
    assert page.locator("table.worklist tbody tr").first.get_attribute("data-study-id") == (
        stat.get_attribute("data-study-id")
    )  # STAT first
    # The reader's place: the row they were reading has not moved on the screen (the new row
    # came in above it, out of sight), and the link they had focused still has the focus.
    assert abs(_top(page, "ROUT-08") - before_top) <= 1
    assert page.evaluate("() => window.scrollY") > before_scroll
    assert page.evaluate("() => document.activeElement.textContent") == "ROUT-09"

    # The marker jumps to the new study and clears itself and the marks.
    page.locator(MARKER).click()
    assert page.locator("[data-live-new]").is_hidden()
    assert page.evaluate("() => document.activeElement.textContent") == "STAT-LIVE"
    box = stat.bounding_box()
    assert 0 <= box["y"] < 720
    assert page.locator("tr.row-new").count() == 0
    page.screenshot(path=artifacts_dir / "live-worklist-jumped.png")
