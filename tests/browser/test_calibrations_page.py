"""The model page's Calibrations section in a real browser, with a screenshot: the table with
the active calibration, activating an older one, and the Recalibrate form's error."""

from __future__ import annotations

import pytest

from tests.browser.conftest import sign_in
from training.models import ModelCalibration

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_admin_sees_the_calibrations_and_activates_one(
    page, live_server, admin_user, model_version, artifacts_dir
):
    shots = artifacts_dir / "training"
    shots.mkdir(exist_ok=True)
    ModelCalibration.objects.create(
        version=model_version,
        number=2,
        kind="dataset",
        status="done",
        source="dataset site-2026 split all",
        n_images=412,
        target_sensitivity=0.9,
        temperature=1.734,
        thresholds={
            c: t for c, t in zip(model_version.class_labels, (0.41, 0.18, 0.22, 0.09), strict=True)
        },
        ood_summary={"threshold": 38.6},
        metrics={"before": {"ece": 0.087}, "after": {"ece": 0.021}},
        created_by=admin_user,
    )
    ModelCalibration.objects.create(
        version=model_version,
        number=3,
        kind="readings",
        status="failed",
        source="signed readings of the last 40 studies",
        error="Only 31 usable image(s); a calibration needs at least 50 "
        "(CXR_CALIBRATION_MIN_IMAGES). Use a larger split (e.g. --split all) or more readings.",
        created_by=admin_user,
    )

    sign_in(page, live_server, admin_user.username)
    page.goto(f"{live_server.url}/training/models/{model_version.pk}/#calibrations")
    section = page.locator("#calibrations")
    assert section.get_by_role("row").count() == 4  # the header and three calibrations
    section.get_by_role("button", name="Activate").click()
    page.get_by_text("Calibration 2 is now active").wait_for()
    assert page.locator("#calibrations tr.current").inner_text().startswith("2")
    page.locator("#calibrations").scroll_into_view_if_needed()
    section = page.locator("#calibrations")
    section.screenshot(path=shots / "model-calibrations.png")

    section.get_by_label("Signed readings").check()
    section.get_by_label("Last N studies").fill("")
    section.get_by_role("button", name="Recalibrate").click()
    error = page.get_by_text("Give how many recent studies to calibrate on.")
    error.wait_for()
    assert error.is_visible()
    page.locator("#calibrations").screenshot(path=shots / "model-calibrations-form-error.png")
    model_version.refresh_from_db()
    assert model_version.calibration_number == 2 and model_version.temperature == 1.734
