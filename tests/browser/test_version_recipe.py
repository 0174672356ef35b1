"""The model page's Recipe panel in a real browser: a trained version and an imported one."""

from __future__ import annotations

import pytest

from tests.browser.conftest import sign_in
from tests.training.views.conftest import make_dataset, make_run, second_version
from training.models import TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_recipe_panel_shows_how_a_version_was_trained(
    page, live_server, admin_user, model_version, artifacts_dir
):
    shots = artifacts_dir / "recipe"
    shots.mkdir(exist_ok=True)
    dataset = make_dataset("kermany-2018", root="/srv/datasets/kermany-2018/train")
    dataset.grouping = "pattern"
    dataset.save()
    run = make_run(dataset, TrainingRun.Status.DONE, user=admin_user)
    run.config.update(
        strategy="partial",
        unfreeze_blocks=2,
        gamma=0.25,
        label_smoothing=0.1,
        lr_schedule="cosine_step",
        lr_warmup_epochs=1.0,
        tta=False,
    )
    run.save()
    trained = second_version(model_version, name="mobilenet_v2-partial-run1", training_run=run)

    sign_in(page, live_server, admin_user.username)
    page.goto(f"{live_server.url}/training/models/{trained.pk}/")
    recipe = page.locator("#recipe")
    assert recipe.get_by_role("heading", name="Recipe").is_visible()
    assert recipe.get_by_text("linear warm-up over 1 epoch(s), then cosine per step").is_visible()
    assert recipe.get_by_text("by pattern").is_visible()
    recipe.screenshot(path=shots / "01-recipe-trained.png")
    page.screenshot(path=shots / "02-version-trained.png", full_page=True)

    page.goto(f"{live_server.url}/training/models/{model_version.pk}/")
    assert page.locator("#recipe").get_by_text("Recipe unknown (imported)").is_visible()
    page.locator("#recipe").screenshot(path=shots / "03-recipe-imported.png")
