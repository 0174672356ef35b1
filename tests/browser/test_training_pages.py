"""An administrator's tour of the training pages in a real browser, with a screenshot of each."""

from __future__ import annotations

import pytest

from tests.browser.conftest import sign_in
from tests.training.views.conftest import make_dataset, make_evaluation, make_run, second_version
from training.models import Dataset, ModelPromotion, ModelVersion, TrainingRun
from training.services import model_version_promote

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# A function, not an expression: the page's Content-Security-Policy refuses the eval that
# Playwright would poll an expression with.
ALL_IMAGES_LOADED = (
    "() => { const imgs = [...document.querySelectorAll('img')];"
    " imgs.forEach(i => { i.loading = 'eager'; });"
    " return imgs.every(i => i.complete && i.naturalWidth > 0); }"
)


def _no_horizontal_overflow(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"the page is {width}px wide"


def test_an_admin_reviews_a_run_compares_and_promotes(
    page, live_server, admin_user, model_version, artifacts_dir
):
    shots = artifacts_dir / "training"
    shots.mkdir(exist_ok=True)

    dataset = make_dataset("kermany-2018", root="/srv/datasets/kermany-2018/chest_xray/train")
    make_dataset("nih-subset", status=Dataset.Status.SCANNING, root="/srv/datasets/nih")
    done = make_run(dataset, TrainingRun.Status.DONE, user=admin_user, plots=True)
    running = make_run(dataset, TrainingRun.Status.RUNNING, user=admin_user)
    make_run(dataset, TrainingRun.Status.FAILED, user=admin_user)
    candidate = model_version
    candidate.training_run, candidate.metrics = done, done.test_metrics
    candidate.save()
    production = second_version(
        candidate, name="resnet18-imported-2025", metrics={"accuracy": 0.81, "macro_auc": 0.9}
    )
    model_version_promote(
        override_reason="test weights",
        version=production,
        promoted_by=admin_user,
        reason="First model imported for the pilot.",
    )
    make_evaluation(candidate, dataset, skill=3.0, seed=1, plots=True)
    make_evaluation(production, dataset, skill=1.5, seed=2, plots=True)

    sign_in(page, live_server, admin_user.username)
    page.get_by_role("link", name="Models", exact=True).click()
    page.wait_for_url(f"{live_server.url}/training/")
    assert page.get_by_role("heading", name="Models and training").is_visible()
    assert page.locator(f"a[href='/training/runs/{running.pk}/']").is_visible()
    page.screenshot(path=shots / "01-overview.png", full_page=True)
    _no_horizontal_overflow(page)

    page.get_by_role("link", name="Datasets", exact=True).click()
    page.wait_for_url("**/training/datasets/")
    assert page.get_by_label("Folder").is_visible()
    page.screenshot(path=shots / "02-datasets.png", full_page=True)
    _no_horizontal_overflow(page)

    page.get_by_role("link", name="kermany-2018").first.click()
    page.wait_for_url(f"**/training/datasets/{dataset.pk}/")
    assert page.get_by_text("normal/broken.png").is_visible()
    page.screenshot(path=shots / "03-dataset.png", full_page=True)
    _no_horizontal_overflow(page)

    page.get_by_role("link", name="Train on this dataset").click()
    page.wait_for_url("**/training/runs/new/**")
    assert not page.get_by_label("Horizontal flips").is_checked()
    assert page.get_by_label("Epochs", exact=True).input_value() == "10"
    page.screenshot(path=shots / "04-run-start.png", full_page=True)
    _no_horizontal_overflow(page)

    page.goto(f"{live_server.url}/training/runs/{running.pk}/")
    assert page.get_by_label("Training progress").is_visible()
    page.screenshot(path=shots / "05-run-running.png", full_page=True)

    page.goto(f"{live_server.url}/training/runs/{done.pk}/")
    page.wait_for_function(ALL_IMAGES_LOADED)
    assert page.locator(".plot img").count() == 4
    assert page.get_by_role("heading", name="Per class").is_visible()
    page.screenshot(path=shots / "06-run-done.png", full_page=True)
    _no_horizontal_overflow(page)

    page.get_by_role("link", name="Model versions", exact=True).click()
    page.wait_for_url("**/training/models/")
    page.screenshot(path=shots / "07-versions.png", full_page=True)
    _no_horizontal_overflow(page)

    page.get_by_role("link", name=candidate.name).first.click()
    page.wait_for_url(f"**/training/models/{candidate.pk}/")
    assert page.get_by_text(candidate.sha256).is_visible()
    page.screenshot(path=shots / "08-version.png", full_page=True)
    _no_horizontal_overflow(page)

    page.get_by_role("link", name="Compare with production first").click()
    page.get_by_label("Dataset").select_option(str(dataset.pk))
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_selector("table.compare")
    assert page.locator("tr.diff-better").count() > 0
    page.screenshot(path=shots / "09-compare.png", full_page=True)
    _no_horizontal_overflow(page)
    page.get_by_text("Plots side by side").click()
    page.wait_for_function(ALL_IMAGES_LOADED)
    assert page.locator(".compare-plots .plot img").count() == 6
    page.screenshot(path=shots / "10-compare-plots.png", full_page=True)

    # Promote from the compare page: the reason is required.
    page.get_by_role("button", name="Promote to production").click()
    page.wait_for_selector("text=Give a reason")
    page.screenshot(path=shots / "11-promote-needs-reason.png", full_page=True)
    assert ModelVersion.objects.get(pk=candidate.pk).status == ModelVersion.Status.CANDIDATE
    page.get_by_label("Reason").fill("Higher sensitivity for pneumonia on kermany-2018 test.")
    # Its only evaluation is on its training dataset: the gate asks for an override reason.
    page.get_by_label("Override: why promote it").fill("No other dataset registered yet.")
    page.get_by_role("button", name="Promote to production").click()
    page.wait_for_selector(".msg-success")
    page.goto(f"{live_server.url}/training/models/{candidate.pk}/")
    assert page.get_by_text("In production since").is_visible()
    page.screenshot(path=shots / "12-promoted.png", full_page=True)
    assert list(ModelVersion.objects.filter(status="production")) == [candidate]
    promotion = ModelPromotion.objects.order_by("-pk").first()
    assert (promotion.model_version, promotion.previous_version, promotion.promoted_by) == (
        candidate,
        production,
        admin_user,
    )
