"""Re-analysis in a real browser: the study page's button re-reads a study with the production
version and the page says what changed; the promote form offers re-running open studies."""

from __future__ import annotations

import pytest

from diagnosis.models import Prediction
from tests.browser.conftest import sign_in
from tests.conftest import wait_for
from tests.diagnosis.conftest import (
    PNEUMONIA_CLASSES,
    THRESHOLDS,
    finish_prediction,
    pneumonia_model,  # noqa: F401 - the fixture
    upload_view,
)
from tests.training.views.conftest import make_dataset, make_evaluation
from training.models import ModelVersion
from training.services import model_version_promote

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_study_page_re_analyses_and_says_that_the_result_changed(
    page,
    live_server,
    radiologist,
    admin_user,
    pneumonia_model,  # noqa: F811 - the fixture imported above
    artifacts_dir,
):
    model_version_promote(override_reason="test weights", version=pneumonia_model, reason="first")
    study = upload_view(radiologist, "BR-1", "ACC-BR-1", seed=71)
    finish_prediction(study.prediction, pneumonia_model, {"NORMAL": 0.3, "PNEUMONIA": 0.7})
    v2 = ModelVersion.objects.create(
        name="pneu-v2",
        architecture="mobilenet_v2",
        class_labels=PNEUMONIA_CLASSES,
        thresholds=THRESHOLDS,
        weights="models/pneu-v2.pt",
        sha256="1" * 64,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
    )

    # Evaluated on other data: the promotion gate lets it through without an override.
    make_evaluation(v2, make_dataset("external-set", root="/data/external-set"))

    sign_in(page, live_server, admin_user.username)
    page.goto(f"{live_server.url}/training/models/{v2.pk}/")
    box = page.get_by_label("Re-run open (unsigned) studies with this version")
    assert box.is_visible() and not box.is_checked()
    page.screenshot(path=artifacts_dir / "reanalysis-promote-form.png", full_page=True)
    page.get_by_label("Reason").fill("better on the external set")
    box.check()
    page.get_by_role("button", name="Promote to production").click()
    page.wait_for_selector("text=queued for re-analysis")
    rerun = Prediction.objects.get(image=study.image, model_version=v2)
    finish_prediction(rerun, v2, {"NORMAL": 0.9, "PNEUMONIA": 0.1})

    model_version_promote(
        override_reason="test weights", version=pneumonia_model, reason="roll back"
    )
    page.goto(f"{live_server.url}/studies/{study.study.pk}/")
    notice = page.locator("[data-reanalysis]")
    assert "Re-analysed with version pneu-v2" in notice.inner_text()
    assert "previously: PNEUMONIA with version pneu-v1" in notice.inner_text()
    page.get_by_role("button", name="Re-analyse with the production version (pneu-v1)").click()
    page.wait_for_selector("text=queued for re-analysis")
    again = Prediction.objects.get(image=study.image, model_version=pneumonia_model)
    assert again.status == "queued"
    finish_prediction(again, pneumonia_model, {"NORMAL": 0.3, "PNEUMONIA": 0.7})
    # The page polls while the view is analysed, and shows the change without a reload.
    wait_for(lambda: page.locator("[data-study-label]").count() == 1, timeout=20)
    notice = page.locator("[data-reanalysis]").inner_text()
    assert "Re-analysed with version pneu-v1" in notice
    assert (
        "previously: NORMAL with version pneu-v2" in page.locator("[data-reanalysis]").inner_text()
    )
    assert page.locator("[data-reanalyse]").count() == 0
    page.screenshot(path=artifacts_dir / "reanalysis-study-page.png", full_page=True)
