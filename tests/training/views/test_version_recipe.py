"""The "Recipe" panel of the model page (templates/training/_recipe.html, training/recipe.py)."""

from __future__ import annotations

import pytest

from tests.training.views.conftest import make_run
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


def _page(client, version) -> str:
    return client.get(f"/training/models/{version.pk}/").content.decode()


def test_a_trained_version_shows_the_recipe_it_was_trained_with(
    admin_client, dataset, model_version
) -> None:
    run = make_run(dataset, TrainingRun.Status.DONE)
    run.config.update(
        strategy="partial",
        unfreeze_blocks=2,
        gamma=0.25,
        label_smoothing=0.1,
        lr_schedule="cosine_step",
        lr_warmup_epochs=1.0,
        tta=True,
    )
    run.save()
    dataset.grouping = "pattern"
    dataset.save()
    model_version.training_run = run
    model_version.save()

    html = _page(admin_client, model_version)

    section = html[html.index('id="recipe"') :]
    section = section[: section.index("</section>")]
    for text in (
        "Recipe",
        "gamma ±25%",
        "no horizontal flip",
        "224 px",
        "4 of 10, best epoch 3 (stopped early, patience 3)",
        "linear warm-up over 1 epoch(s), then cosine per step",
        "Label smoothing</dt><dd>0.1",
        "partial (last 2 backbone blocks)",
        "on (4 views, logits averaged)",
        "by pattern",
        "lowest validation loss on the patient-grouped validation split",
    ):
        assert text in section, text
    assert "split by image" not in section


def test_an_old_run_reads_as_the_recipe_of_its_time_and_warns_without_grouping(
    admin_client, dataset, model_version
) -> None:
    # make_run's config predates gamma, the per-step schedule and TTA; the dataset has no grouping.
    model_version.training_run = make_run(dataset, TrainingRun.Status.DONE)
    model_version.save()

    html = _page(admin_client, model_version)

    assert "no gamma" in html
    assert "cosine per epoch, no warm-up" in html
    assert "Test-time augmentation</dt><dd>off" in html
    assert "none: split by image" in html
    assert "the internal test overstates the model" in html


def test_an_imported_version_says_its_recipe_is_unknown(admin_client, model_version) -> None:
    assert model_version.training_run is None

    html = _page(admin_client, model_version)

    assert "Recipe unknown (imported)" in html
    assert "Label smoothing" not in html


def test_the_recipe_escapes_what_the_dataset_and_config_hold(
    admin_client, dataset, model_version
) -> None:
    run = make_run(dataset, TrainingRun.Status.DONE)
    run.config["imbalance"] = "<script>alert(1)</script>"
    run.save()
    model_version.training_run = run
    model_version.save()

    html = _page(admin_client, model_version)

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
