"""A study whose image is unlike the training data, in a real browser: the worklist reads it
first with a distinct badge, and the study page warns, greys the probabilities and never says
normal."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from diagnosis.models import Reading
from diagnosis.results import UNRELIABLE_LABEL
from tests.browser.conftest import sign_in
from tests.diagnosis.conftest import (
    finish_prediction,
    pneumonia_model,  # noqa: F401 - the fixture
    upload_view,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

OOD = {
    "score": 41.2,
    "threshold": 18.0,
    "flagged": True,
    "reasons": ["unlike the training data (score 41.2 > 18.0)"],
}


def _keep(path: Path) -> None:
    """A copy for the reviewer (CXR_SCREENSHOTS_DIR), when asked for."""
    folder = os.environ.get("CXR_SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


def test_an_ood_study_is_flagged_unreliable_and_never_normal(
    page,
    live_server,
    radiologist,
    pneumonia_model,  # noqa: F811 - the fixture imported above
    artifacts_dir,
):
    plain = upload_view(radiologist, "OD-1", "ACC-OD-1", seed=71)
    finish_prediction(plain.prediction, pneumonia_model, {"NORMAL": 0.96, "PNEUMONIA": 0.04})
    flagged = upload_view(radiologist, "OD-2", "ACC-OD-2", seed=72)
    finish_prediction(flagged.prediction, pneumonia_model, {"NORMAL": 0.2, "PNEUMONIA": 0.8})
    ood = upload_view(radiologist, "OD-3", "ACC-OD-3", seed=73)
    finish_prediction(ood.prediction, pneumonia_model, {"NORMAL": 0.97, "PNEUMONIA": 0.03}, ood=OOD)

    sign_in(page, live_server, radiologist.username)
    rows = page.locator("table.worklist tbody tr")
    assert rows.nth(0).get_attribute("data-study-id") == str(ood.study.pk)
    first = rows.nth(0).inner_text()
    assert "unlike training data" in first and UNRELIABLE_LABEL in first
    assert "NORMAL" not in first
    assert rows.nth(1).get_attribute("data-study-id") == str(flagged.study.pk)
    badge = rows.nth(0).locator("[data-ood-badge]")
    assert badge.is_visible()
    assert "score 41.2 > 18.0" in badge.get_attribute("title")
    shot = artifacts_dir / "ood-worklist.png"
    page.screenshot(path=shot, full_page=True)
    _keep(shot)

    rows.nth(0).get_by_role("link", name="ACC-OD-3").click()
    page.wait_for_selector("[data-ood-warning]")
    warning = page.locator("[data-ood-warning]")
    assert warning.is_visible()
    text = warning.inner_text()
    assert "Unlike the training data — result unreliable" in text
    assert "41.2" in text and "18.0" in text
    assert "it is not reported as normal" in text
    panel = page.locator(".study-result")
    assert panel.locator("[data-study-label]").inner_text() == UNRELIABLE_LABEL
    assert page.locator("[data-shown-label]").inner_text() == UNRELIABLE_LABEL
    # The probabilities stay visible, greyed out.
    probs = panel.locator("[data-probs-unreliable]")
    assert probs.is_visible()
    assert float(probs.evaluate("(el) => getComputedStyle(el).opacity")) < 1
    # Nowhere does a result say NORMAL (the class only names a bar).
    for locator in ("[data-study-label]", ".finding strong", "[data-shown-label]"):
        for i in range(page.locator(locator).count()):
            assert page.locator(locator).nth(i).inner_text() != "NORMAL"
    assert "Unlike the training data" in page.locator("[data-image-ood]").inner_text()
    # Nothing to agree with: no "agree" at all, the final label is chosen.
    assert page.locator("#reading input[name=decision][value=agree]").count() == 0
    assert page.get_by_role("radio", name="Agree with the model").count() == 0
    assert page.locator("[data-agree-withheld]").is_visible()
    shot = artifacts_dir / "ood-study.png"
    page.screenshot(path=shot, full_page=True)
    _keep(shot)
    page.goto(f"{live_server.url}/studies/{ood.study.pk}/report/")
    result = page.locator(".study-result").inner_text()
    assert result.startswith("Unlike the training data — result unreliable")
    assert f"Model result: {UNRELIABLE_LABEL}" in result
    assert page.locator("[data-image-ood]").is_visible()
    shot = artifacts_dir / "ood-report.png"
    page.screenshot(path=shot, full_page=True)
    _keep(shot)


def test_an_ood_study_is_read_with_a_chosen_label_never_an_agree(
    page,
    live_server,
    radiologist,
    pneumonia_model,  # noqa: F811 - the fixture imported above
    artifacts_dir,
):
    ood = upload_view(radiologist, "OD-4", "ACC-OD-4", seed=74)
    finish_prediction(ood.prediction, pneumonia_model, {"NORMAL": 0.97, "PNEUMONIA": 0.03}, ood=OOD)
    sign_in(page, live_server, radiologist.username)
    page.goto(f"{live_server.url}/studies/{ood.study.pk}/")
    reading = page.locator("#reading")
    assert "nothing to agree with" in reading.locator("[data-agree-withheld]").inner_text()
    # The keys' help offers no "a agree" here; "v" goes to the final label; "a" says why not.
    keys = page.locator("#study-keys").inner_text()
    assert "agree" not in keys and "final label" in keys
    page.locator("h1").click()
    page.keyboard.press("v")
    assert page.evaluate("document.activeElement.name") == "final_label"
    page.locator("h1").click()
    page.keyboard.press("a")
    assert "Nothing to agree with" in page.locator("#study-keys-status").inner_text()
    # A form that still posts "agree" (an old tab) is refused with the reason.
    page.evaluate(
        "() => { document.querySelector('#reading input[name=decision]').value = 'agree'; }"
    )
    reading.get_by_role("button", name="Sign reading").click()
    alert = page.locator("#reading [role=alert]").first
    alert.wait_for()
    assert "nothing to agree with" in alert.inner_text()
    assert not Reading.objects.exists()
    shot = artifacts_dir / "ood-reading-refused.png"
    page.locator("#reading").screenshot(path=shot)
    _keep(shot)
    # The label chosen explicitly is signed.
    page.locator("#reading").get_by_label("Final label").select_option("PNEUMONIA")
    page.locator("#reading").get_by_role("button", name="Sign reading").click()
    page.wait_for_selector(".current-reading")
    reading_row = Reading.objects.get()
    assert reading_row.final_label == "PNEUMONIA" and reading_row.agrees_with_model is False
    assert "PNEUMONIA" in page.locator(".current-reading").inner_text()
    shot = artifacts_dir / "ood-reading-signed.png"
    page.locator("#reading").screenshot(path=shot)
    _keep(shot)
