"""The training run pages (training/views/runs.py): start a run, follow it, its results and
plots, cancel."""

from __future__ import annotations

import pytest
from django.template.defaultfilters import floatformat

from cxrweb.audit.models import AuditEvent
from tests.training.views.conftest import make_dataset, make_run, sent_ids
from training.dispatch import RUN_TRAINING
from training.models import Dataset, TrainingRun

pytestmark = pytest.mark.django_db


def run_form(dataset: Dataset, **changes) -> dict:
    form = {
        "dataset": dataset.pk,
        "architecture": "resnet18",
        "weights": "imagenet",
        "weights_path": "",
        "strategy": "head",
        "epochs": "5",
        "batch_size": "16",
        "lr": "",
        "warmup_head_epochs": "0",
        "unfreeze_blocks": "2",
        "imbalance": "weighted_loss",
        "early_stopping_patience": "3",
        "max_steps_per_epoch": "",
        "seed": "0",
    }
    form.update(changes)
    return form


def test_the_architecture_choices_are_the_ml_cores():
    from training.forms import ARCHITECTURES
    from training.ml.models.architectures import ARCHITECTURES as CORE

    assert ARCHITECTURES == CORE


def test_the_start_form_creates_a_queued_run_and_audits_it(
    admin_client, admin_user, dataset, sent_tasks, django_capture_on_commit_callbacks
):
    queued = sent_ids(sent_tasks, RUN_TRAINING)
    with django_capture_on_commit_callbacks(execute=True):
        resp = admin_client.post(
            "/training/runs/new/",
            run_form(
                dataset,
                strategy="full",
                warmup_head_epochs="1",
                lr="0.0002",
                hflip="on",
                max_steps_per_epoch="50",
                early_stopping_patience="0",
            ),
        )
    run = TrainingRun.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/training/runs/{run.pk}/"
    assert queued() == [run.pk]
    assert (run.status, run.strategy, run.created_by) == ("queued", "full", admin_user)
    c = run.config
    assert (
        c["epochs"],
        c["warmup_head_epochs"],
        c["lr"],
        c["hflip"],
        c["max_steps_per_epoch"],
        c["early_stopping_patience"],
        c["weights"],
    ) == (5, 1, 0.0002, True, 50, None, "imagenet")
    event = AuditEvent.objects.get(action=AuditEvent.Action.TRAIN)
    assert (event.username, event.object_id) == (admin_user.username, str(run.pk))
    assert event.detail["dataset"] == "kermany"


def test_horizontal_flips_are_off_unless_asked_for(admin_client, dataset, sent_tasks):
    html = admin_client.get("/training/runs/new/").content.decode()
    assert 'name="hflip"' in html and 'name="hflip" checked' not in html
    admin_client.post("/training/runs/new/", run_form(dataset, weights="none"))
    run = TrainingRun.objects.get()
    assert run.config["hflip"] is False and run.weights == "none"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"epochs": "0"}, "greater than or equal to 1"),
        ({"epochs": "many"}, "Enter a whole number"),
        ({"weights": "file", "weights_path": "/no/such/backbone.pt"}, "CXR_WEIGHTS_ROOTS"),
        ({"weights": "file", "weights_path": "/etc/passwd"}, "CXR_WEIGHTS_ROOTS"),
        ({"weights": "file", "weights_path": ""}, "Give the path of the weights file"),
        ({"warmup_head_epochs": "2"}, "only apply to full fine-tuning"),
        ({"strategy": "full", "warmup_head_epochs": "5"}, "must be fewer than epochs"),
        ({"architecture": "alexnet"}, "Select a valid choice"),
    ],
)
def test_the_start_form_shows_what_is_wrong_and_starts_nothing(
    admin_client, dataset, changes, message
):
    resp = admin_client.post("/training/runs/new/", run_form(dataset, **changes))
    assert resp.status_code == 400
    assert message in resp.content.decode()
    assert not TrainingRun.objects.exists()


def test_the_start_form_offers_only_ready_datasets(admin_client, dataset):
    scanning = make_dataset("scanning", status=Dataset.Status.SCANNING)
    html = admin_client.get("/training/runs/new/").content.decode()
    assert f'<option value="{dataset.pk}"' in html
    assert f'<option value="{scanning.pk}"' not in html
    resp = admin_client.post("/training/runs/new/", run_form(scanning))
    assert resp.status_code == 400 and not TrainingRun.objects.exists()


def test_a_running_run_shows_live_progress_and_polls(admin_client, dataset):
    run = make_run(dataset, TrainingRun.Status.RUNNING)
    html = admin_client.get(f"/training/runs/{run.pk}/").content.decode()
    assert f'data-poll-url="/training/runs/{run.pk}/status/" data-poll-ms=' in html
    assert 'data-pending="1"' in html
    assert f'value="{run.percent}"' in html and run.percent == 25
    for text in ("train", "3 / 10", "20 / 40", "0.6123", "12 min 34 s", "212.4", "Cancel run"):
        assert text in html, text
    fragment = admin_client.get(f"/training/runs/{run.pk}/status/")
    assert fragment["Cache-Control"] == "no-store"
    assert "<html" not in fragment.content.decode() and "12 min 34 s" in fragment.content.decode()


def test_a_finished_run_shows_its_results_and_plots(admin_client, dataset, model_version):
    run = make_run(dataset, TrainingRun.Status.DONE, plots=True)
    model_version.training_run = run
    model_version.save()
    html = admin_client.get(f"/training/runs/{run.pk}/").content.decode()
    assert "data-poll-ms" not in html and 'data-pending=""' in html
    assert "Cancel run" not in html
    m = run.test_metrics
    for text in (
        floatformat(m["accuracy"], 3),
        floatformat(m["balanced_accuracy"], 3),
        floatformat(m["macro_auc"], 3),
        "ECE before temperature",
        "ECE after temperature",
        "Brier score",
        floatformat(m["per_class"]["covid19"]["npv"], 3),
        "Sens. at threshold",
        "chexpert-resnet18.pt",
        "2,052 of 11,178,564",
        "stopped early",
        f'href="/training/models/{model_version.pk}/"',
        "Compare with production",
        '<span class="best-tag">best</span>',
    ):
        assert text in html, text
    for kind in ("history", "confusion", "roc", "reliability"):
        url = f"/training/runs/{run.pk}/plots/{kind}.png"
        assert f'src="{url}"' in html
        resp = admin_client.get(url)
        assert resp.status_code == 200 and resp["Content-Type"] == "image/png"
        assert b"".join(resp.streaming_content).startswith(b"\x89PNG")
    assert admin_client.get(f"/training/runs/{run.pk}/plots/other.png").status_code == 404


def test_a_failed_run_shows_its_error(admin_client, dataset):
    run = make_run(dataset, TrainingRun.Status.FAILED)
    html = admin_client.get(f"/training/runs/{run.pk}/").content.decode()
    assert "training diverged" in html and "data-poll-ms" not in html


def test_cancel_asks_a_running_run_to_stop(admin_client, dataset):
    run = make_run(dataset, TrainingRun.Status.RUNNING)
    resp = admin_client.post(f"/training/runs/{run.pk}/cancel/")
    assert resp.status_code == 302
    run.refresh_from_db()
    assert run.cancel_requested and run.status == TrainingRun.Status.RUNNING
    html = admin_client.get(f"/training/runs/{run.pk}/").content.decode()
    assert "stops after the current batch" in html


def test_cancel_stops_a_queued_run_at_once(admin_client, dataset):
    run = make_run(dataset, TrainingRun.Status.QUEUED)
    admin_client.post(f"/training/runs/{run.pk}/cancel/")
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED and run.cancel_requested


def test_cancel_is_post_only(admin_client, dataset):
    run = make_run(dataset, TrainingRun.Status.RUNNING)
    assert admin_client.get(f"/training/runs/{run.pk}/cancel/").status_code == 405
    run.refresh_from_db()
    assert not run.cancel_requested


def test_the_start_form_sets_the_recipe_options_and_blank_keeps_the_defaults(
    admin_client, dataset, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/training/runs/new/",
            run_form(dataset, gamma="0", label_smoothing="0.05", tta="on"),
        )
        admin_client.post("/training/runs/new/", run_form(dataset, gamma="", label_smoothing=""))
    first, second = TrainingRun.objects.order_by("pk")
    assert (first.config["gamma"], first.config["label_smoothing"], first.config["tta"]) == (
        0.0,
        0.05,
        True,
    )
    assert (second.config["gamma"], second.config["label_smoothing"], second.config["tta"]) == (
        0.25,
        0.1,
        False,
    )
    assert second.config["lr_schedule"] == "cosine_step"
    resp = admin_client.post("/training/runs/new/", run_form(dataset, label_smoothing="0.9"))
    assert resp.status_code == 400 and TrainingRun.objects.count() == 2
    assert "Ensure this value is less than or equal to 0.5" in resp.content.decode()
