"""The model page in a real browser: the internal test beside the external evaluations, the
headline figure labelled with its dataset, and the promotion gate's override field."""

from __future__ import annotations

import os
import shutil

import pytest
from django.template.defaultfilters import floatformat

from tests.browser.conftest import sign_in
from tests.training.views.conftest import make_dataset, make_evaluation, make_run
from training.models import ModelPromotion, TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_model_page_shows_internal_and_external_and_gates_promotion(
    page, live_server, admin_user, model_version, artifacts_dir
):
    shots = artifacts_dir / "promotion-gate"
    shots.mkdir(exist_ok=True)
    kermany = make_dataset("kermany-pediatric", root="/srv/datasets/kermany-pediatric")
    kermany.grouping = "pattern"
    kermany.save()
    run = make_run(kermany, TrainingRun.Status.DONE, user=admin_user)
    model_version.training_run, model_version.metrics = run, run.test_metrics
    model_version.save()
    make_evaluation(model_version, kermany, seed=2)

    sign_in(page, live_server, admin_user.username)
    page.goto(f"{live_server.url}/training/models/{model_version.pk}/")
    assert page.get_by_text("Not externally validated.").is_visible()
    headline = page.get_by_test_id("headline")
    assert "Internal test (same dataset as training; patients grouped: yes)" in (
        headline.inner_text()
    )
    override = page.get_by_label("Override: why promote it")
    assert override.is_visible()
    page.screenshot(path=shots / "01-not-validated.png", full_page=True)

    # Promoting without an override is refused with the reason; nothing changes.
    page.get_by_label("Reason", exact=True).fill("Best run so far.")
    page.get_by_role("button", name="Promote to production").click()
    page.wait_for_selector("text=has no done evaluation on a dataset other than")
    assert not ModelPromotion.objects.exists()

    # An evaluation on another hospital's data: the page leads with it, the field goes away.
    adult = make_dataset("adult-hospital-b", root="/srv/datasets/adult-b")
    external = make_evaluation(model_version, adult, skill=1.0, seed=4)
    page.goto(f"{live_server.url}/training/models/{model_version.pk}/")
    text = page.get_by_test_id("headline").inner_text()
    assert "External: adult-hospital-b / test" in text
    assert floatformat(external.metrics["accuracy"], 3) in text
    assert page.get_by_label("Override: why promote it").count() == 0
    assert page.get_by_role("row", name="External adult-hospital-b").is_visible()
    page.screenshot(path=shots / "02-validated.png", full_page=True)
    page.get_by_label("Reason", exact=True).fill("Holds up on adult X-rays of hospital B.")
    page.get_by_role("button", name="Promote to production").click()
    page.wait_for_selector(".msg-success")
    promotion = ModelPromotion.objects.get()
    assert [e["dataset"] for e in promotion.external_evaluations] == ["adult-hospital-b"]

    keep = "/tmp/shots3"
    os.makedirs(keep, exist_ok=True)
    for shot in shots.iterdir():
        shutil.copy(shot, keep)
