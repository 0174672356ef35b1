"""A version without an out-of-distribution reference, in a real browser: the study page, the
report and the version's page say plainly that images unlike its training data are not flagged."""

from __future__ import annotations

import pytest

from tests.browser.conftest import sign_in
from tests.browser.test_ood_result import _keep
from tests.diagnosis.conftest import (
    finish_prediction,
    pneumonia_model,  # noqa: F401 - the fixture
    upload_view,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SAID = "has no out-of-distribution check: images unlike its training data are not flagged"


def test_every_page_says_the_version_has_no_ood_check(
    page,
    live_server,
    admin_user,
    pneumonia_model,  # noqa: F811 - the fixture imported above
    artifacts_dir,
):
    upload = upload_view(admin_user, "NOC-1", "ACC-NOC-1", seed=95)
    finish_prediction(upload.prediction, pneumonia_model, {"NORMAL": 0.9, "PNEUMONIA": 0.1})
    sign_in(page, live_server, admin_user.username)

    page.goto(f"{live_server.url}/studies/{upload.study.pk}/")
    note = page.locator(".study-result [data-no-ood-check]")
    assert note.is_visible()
    assert f"This model version (pneu-v1) {SAID}" in note.inner_text()
    assert "manage.py calibrate" in note.locator("code").inner_text()
    assert "Not checked" in page.locator(".study-image [data-image-ood]").inner_text()
    shot = artifacts_dir / "no-ood-check-study.png"
    page.screenshot(path=shot, full_page=True)
    _keep(shot)

    page.goto(f"{live_server.url}/studies/{upload.study.pk}/report/")
    assert SAID in page.locator("[data-no-ood-check]").inner_text()
    shot = artifacts_dir / "no-ood-check-report.png"
    page.screenshot(path=shot, full_page=True)
    _keep(shot)

    page.goto(f"{live_server.url}/training/models/{pneumonia_model.pk}/")
    fact = page.locator("dt", has_text="Out-of-distribution check").locator("xpath=..")
    assert SAID in fact.inner_text()
    shot = artifacts_dir / "no-ood-check-version.png"
    page.locator("#meta-title").locator("xpath=..").screenshot(path=shot)
    _keep(shot)
