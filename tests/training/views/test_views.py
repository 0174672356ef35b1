"""The training pages: datasets, runs, model versions, evaluations, compare and promote.

Rows are created directly in the database (a dataset with a small scan and split, runs in every
status, evaluations with real metrics from training.ml.train.metrics); the broker is the boundary, so
the tasks sent are recorded instead (the sent_tasks fixture) where a form queues work.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from django.template.defaultfilters import floatformat
from django.utils import timezone

from cxrweb.audit.models import AuditEvent
from tests.conftest import CLASSES
from training.dispatch import RUN_EVALUATION, RUN_TRAINING, SCAN_DATASET
from training.models import Dataset, Evaluation, ModelPromotion, ModelVersion, TrainingRun


@pytest.fixture(autouse=True)
def _dataset_roots(settings, tmp_path):
    """Folders registered here are made under tmp_path (CXR_DATASET_ROOTS)."""
    settings.CXR_DATASET_ROOTS = [tmp_path]


pytestmark = pytest.mark.django_db


def _sent_ids(sent_tasks, name: str):
    """The ids sent so far as task `name`, when called; any other task sent fails the test."""

    def ids() -> list[int]:
        assert all(t.name == name and len(t.args) == 1 for t in sent_tasks), sent_tasks
        return [t.args[0] for t in sent_tasks]

    return ids


# --------------------------------------------------------------------------------------------------
# Data made the way the services make it (also used by tests/browser/test_training_pages.py)
# --------------------------------------------------------------------------------------------------


def make_metrics(
    classes=CLASSES,
    *,
    n: int = 80,
    skill: float = 2.0,
    seed: int = 0,
    thresholds: dict | None = None,
) -> tuple[dict, dict]:
    """Real classification_report figures (and ROC / reliability curves) of a fake model."""
    from training.ml.train.calibration import reliability_bins
    from training.ml.train.metrics import classification_report, roc_curves

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(classes)
    logits = rng.normal(size=(n, len(classes)))
    logits[np.arange(n), labels] += skill
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    thresholds = thresholds or {c: 0.4 for c in classes}
    metrics = classification_report(labels, probs, classes, thresholds=thresholds)
    metrics.update(
        temperature=1.3, ece_uncalibrated=metrics["ece"] + 0.05, ece_calibrated=metrics["ece"]
    )
    curves = {
        "roc": roc_curves(labels, probs, classes),
        "reliability": reliability_bins(probs, labels),
    }
    return metrics, curves


def make_dataset(
    name: str = "kermany",
    *,
    status: str = Dataset.Status.READY,
    root: str = "/data/x",
    classes=CLASSES,
    per_class: int = 10,
) -> Dataset:
    if status != Dataset.Status.READY:
        return Dataset.objects.create(
            name=name,
            root=root,
            status=status,
            error="No class folders in /data/x." if status == Dataset.Status.FAILED else "",
        )
    samples = [[f"{c}/img{i:03d}.png", k] for k, c in enumerate(classes) for i in range(per_class)]
    split: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for index in range(len(samples)):
        split[("train", "train", "train", "val", "test")[index % 5]].append(index)
    unreadable = [
        ["normal/broken.png", "The file is truncated."],
        ["covid19/notes.png", "Not a PNG, JPEG or DICOM file."],
    ]
    return Dataset.objects.create(
        name=name,
        root=root,
        status=status,
        classes=list(classes),
        class_counts={c: per_class for c in classes},
        scan={
            "root": root,
            "classes": list(classes),
            "samples": samples,
            "class_counts": {c: per_class for c in classes},
            "unreadable": unreadable,
            "skipped": ["README.txt"],
            "formats": {"PNG": len(samples)},
            "sha256": [],
            "verified": True,
        },
        unreadable=unreadable,
        split=split,
        split_seed=7,
    )


HISTORY = [
    {
        "epoch": e,
        "phase": "head",
        "train_loss": 1.2 / e,
        "train_acc": 0.5 + e / 20,
        "val_loss": 1.1 / e + (0.2 if e == 4 else 0),
        "val_acc": 0.45 + e / 20,
        "lr": 1e-3,
        "seconds": 12.5,
        "images_per_s": 180.0,
        "val_images_per_s": 400.0,
        "train_images": 640,
    }
    for e in range(1, 5)
]


def make_run(dataset: Dataset, status: str, *, user=None, plots: bool = False) -> TrainingRun:
    now = timezone.now()
    config = {
        "arch": "resnet18",
        "weights": "imagenet",
        "strategy": "head",
        "epochs": 10,
        "batch_size": 16,
        "lr": None,
        "hflip": False,
        "early_stopping_patience": 3,
    }
    run = TrainingRun(
        dataset=dataset,
        architecture="resnet18",
        strategy="head",
        weights="imagenet",
        config=config,
        status=status,
        created_by=user,
    )
    if status != TrainingRun.Status.QUEUED:
        run.started_at = now - timezone.timedelta(minutes=12)
        run.worker = "gpu-host-1:4242"
    if status == TrainingRun.Status.RUNNING:
        run.progress = {
            "phase": "train",
            "epoch": 3,
            "epochs": 10,
            "step": 20,
            "steps": 40,
            "loss": 0.61234,
            "eta_s": 754.0,
            "images_per_s": 212.4,
        }
    if status == TrainingRun.Status.FAILED:
        run.error = "The validation loss is nan after epoch 2: training diverged."
        run.finished_at = now
    if status in (TrainingRun.Status.DONE, TrainingRun.Status.CANCELLED):
        metrics, curves = make_metrics(thresholds={c: 0.35 for c in CLASSES})
        run.history = HISTORY
        run.result = {
            "history": HISTORY,
            "best_epoch": 3,
            "test_metrics": metrics,
            "val_metrics": metrics,
            "temperature": 1.3,
            "thresholds": {c: 0.35 for c in CLASSES},
            "checkpoint_path": "/tmp/best.pt",
            "sha256": "ab" * 32,
            "stopped_early": True,
            "cancelled": status == TrainingRun.Status.CANCELLED,
            "backbone_report": "loaded 122 tensors from /weights/chexpert-resnet18.pt; "
            "missing 0 (left at random init); unexpected 2 (ignored)",
            "trainable_params": 2052,
            "total_params": 11178564,
            "classes": CLASSES,
            "strategy_summary": "head: 2,052 of 11,178,564 parameters trainable (0.0%); "
            "backbone blocks trained: none",
        }
        run.progress = {"phase": "test", "epoch": 3, "epochs": 10, "step": 5, "steps": 5}
        run.finished_at = now
        if plots:
            from training.services.plots import save_result_plots

            save_result_plots(
                run,
                metrics=metrics,
                curves=curves,
                prefix="run-test",
                history=HISTORY,
                best_epoch=3,
            )
    run.save()
    return run


def make_evaluation(
    version: ModelVersion,
    dataset: Dataset,
    *,
    status=Evaluation.Status.DONE,
    skill: float = 2.0,
    seed: int = 0,
    plots: bool = False,
) -> Evaluation:
    evaluation = Evaluation(model_version=version, dataset=dataset, split="test", status=status)
    if status == Evaluation.Status.DONE:
        metrics, curves = make_metrics(skill=skill, seed=seed)
        evaluation.metrics, evaluation.curves = metrics, curves
        evaluation.finished_at = timezone.now()
        if plots:
            from training.services.plots import save_result_plots

            save_result_plots(
                evaluation, metrics=metrics, curves=curves, prefix=f"eval-{version.pk}"
            )
    if status == Evaluation.Status.FAILED:
        evaluation.error = "The weights file of the version does not match its sha256."
    evaluation.save()
    return evaluation


def second_version(version: ModelVersion, name: str = "second-mobilenet", **extra) -> ModelVersion:
    """Another version with the same weights file (the pages do not load weights)."""
    return ModelVersion.objects.create(
        name=name,
        architecture=version.architecture,
        class_labels=version.class_labels,
        weights=version.weights.name,
        sha256=version.sha256,
        metrics=extra.pop("metrics", {}),
        **extra,
    )


@pytest.fixture
def dataset(db) -> Dataset:
    return make_dataset()


@pytest.fixture
def world(dataset, model_version, admin_user):
    """One of everything: datasets in each status, runs in each status, evaluations."""
    runs = {
        status: make_run(dataset, status, user=admin_user) for status in TrainingRun.Status.values
    }
    model_version.training_run = runs["done"]
    model_version.metrics = runs["done"].test_metrics
    model_version.save()
    evaluations = {
        status: make_evaluation(model_version, dataset, status=status)
        for status in Evaluation.Status.values
    }
    return {
        "dataset": dataset,
        "version": model_version,
        "runs": runs,
        "evaluations": evaluations,
        "scanning": make_dataset("still-scanning", status=Dataset.Status.SCANNING),
        "failed": make_dataset("broken", status=Dataset.Status.FAILED),
    }


def page_urls(world) -> list[str]:
    d, v = world["dataset"], world["version"]
    urls = [
        "/training/",
        "/training/datasets/",
        f"/training/datasets/{d.pk}/",
        f"/training/datasets/{d.pk}/status/",
        f"/training/datasets/{world['scanning'].pk}/",
        f"/training/datasets/{world['failed'].pk}/",
        "/training/runs/",
        "/training/runs/new/",
        f"/training/runs/new/?dataset={d.pk}",
        "/training/models/",
        f"/training/models/{v.pk}/",
        f"/training/models/{v.pk}/evaluations/",
        "/training/compare/",
        f"/training/compare/?candidate={v.pk}",
        f"/training/compare/?candidate={v.pk}&dataset={d.pk}",
        f"/training/compare/results/?candidate={v.pk}&dataset={d.pk}",
    ]
    for run in world["runs"].values():
        urls += [f"/training/runs/{run.pk}/", f"/training/runs/{run.pk}/status/"]
    return urls


POST_URLS = [
    "/training/datasets/",
    "/training/runs/new/",
    "/training/runs/{run}/cancel/",
    "/training/models/{version}/evaluate/",
    "/training/models/{version}/promote/",
    "/training/compare/",
]


# --------------------------------------------------------------------------------------------------
# Who may see the pages
# --------------------------------------------------------------------------------------------------


def test_every_page_renders_for_an_admin(admin_client, world):
    for url in page_urls(world):
        resp = admin_client.get(url)
        assert resp.status_code == 200, url
        assert b"Traceback" not in resp.content


def test_the_nav_links_to_the_training_pages_for_admins_only(admin_client, rad_client, world):
    assert 'href="/training/"' in admin_client.get("/").content.decode()
    assert 'href="/training/"' not in rad_client.get("/").content.decode()


@pytest.mark.parametrize("persona", ["radiologist", "outsider"])
def test_radiologists_and_outsiders_are_refused_on_every_page(client, world, persona, request):
    client.force_login(request.getfixturevalue(persona))
    v, run = world["version"], world["runs"]["running"]
    urls = page_urls(world) + [
        f"/training/runs/{world['runs']['done'].pk}/plots/history.png",
        f"/training/models/{v.pk}/checkpoint.pt",
        f"/training/evaluations/{world['evaluations']['done'].pk}/plots/roc.png",
    ]
    for url in urls:
        assert client.get(url).status_code == 403, url
    for url in POST_URLS:
        url = url.format(run=run.pk, version=v.pk)
        assert client.post(url, {"reason": "x", "name": "x"}).status_code == 403, url
    run.refresh_from_db()
    assert not run.cancel_requested
    assert v.status == ModelVersion.Status.CANDIDATE and not ModelPromotion.objects.exists()
    assert AuditEvent.objects.filter(action=AuditEvent.Action.ACCESS_DENIED).exists()


def test_anonymous_users_are_sent_to_sign_in(client, db):
    resp = client.get("/training/")
    assert resp.status_code == 302 and "/accounts/login/" in resp["Location"]


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


def test_the_register_form_creates_a_dataset_and_queues_its_scan(
    admin_client, admin_user, tmp_path, sent_tasks, django_capture_on_commit_callbacks
):
    queued = _sent_ids(sent_tasks, SCAN_DATASET)
    (tmp_path / "normal").mkdir()
    with django_capture_on_commit_callbacks(execute=True):
        resp = admin_client.post(
            "/training/datasets/",
            {
                "name": "kermany",
                "root": str(tmp_path),
                "seed": "3",
                "val_fraction": "0.1",
                "test_fraction": "0.2",
            },
        )
    dataset = Dataset.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/training/datasets/{dataset.pk}/"
    assert queued() == [dataset.pk]
    assert (
        dataset.status,
        dataset.split_seed,
        dataset.val_fraction,
        dataset.test_fraction,
        dataset.created_by,
    ) == ("scanning", 3, 0.1, 0.2, admin_user)
    html = admin_client.get(resp["Location"]).content.decode()
    assert "Scanning" in html
    assert f'data-poll-url="/training/datasets/{dataset.pk}/status/" data-poll-ms=' in html
    assert 'data-pending="1"' in html


@pytest.mark.parametrize(
    "data, message",
    [
        ({"root": "/no/such/folder"}, "only from folders under the dataset roots"),
        ({"root": "{tmp}/nope"}, "No such folder"),
        ({"val_fraction": "0.7"}, "less than or equal to 0.49"),
        ({"name": ""}, "This field is required"),
    ],
)
def test_the_register_form_shows_what_is_wrong_and_registers_nothing(
    admin_client, tmp_path, data, message
):
    form = {
        "name": "x",
        "root": str(tmp_path),
        "seed": "0",
        "val_fraction": "0.15",
        "test_fraction": "0.15",
        **data,
    }
    form["root"] = form["root"].replace("{tmp}", str(tmp_path))
    resp = admin_client.post("/training/datasets/", form)
    assert resp.status_code == 400
    assert message in resp.content.decode()
    assert not Dataset.objects.exists()


def test_a_dataset_page_shows_classes_splits_and_unreadable_files(admin_client, dataset):
    html = admin_client.get(f"/training/datasets/{dataset.pk}/").content.decode()
    # per class: 10 images, 6 train / 2 val / 2 test (every 5th index is test)
    for c in CLASSES:
        assert f'<th scope="row">{c}</th><td class="num">10</td><td class="num">6</td>' in html
    assert (
        '<td class="num">40</td><td class="num">24</td><td class="num">8</td><td class="num">8</td>'
        in html
    )
    assert "normal/broken.png" in html and "The file is truncated." in html
    assert "Unreadable files (2)" in html
    assert "data-poll-ms" not in html  # ready: no polling
    assert f'href="/training/runs/new/?dataset={dataset.pk}"' in html


def test_a_failed_scan_shows_its_error(admin_client, db):
    dataset = make_dataset("broken", status=Dataset.Status.FAILED)
    html = admin_client.get(f"/training/datasets/{dataset.pk}/").content.decode()
    assert "The scan failed" in html and "No class folders" in html


# --------------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------------


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
    queued = _sent_ids(sent_tasks, RUN_TRAINING)
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


def test_the_overview_shows_production_candidates_runs_and_datasets(
    admin_client, world, production_model
):
    candidate = second_version(production_model, metrics={"accuracy": 0.876})
    html = admin_client.get("/training/").content.decode()
    assert production_model.name in html and "normal, bacterial_pneumonia" in html
    assert candidate.name in html and "0.876" in html
    assert f'href="/training/runs/{world["runs"]["running"].pk}/"' in html
    assert 'data-refresh="3000"' in html  # a run is still going
    assert "kermany" in html and 'href="/agreement/"' in html


# --------------------------------------------------------------------------------------------------
# Model versions: evaluate, promote, roll back, export
# --------------------------------------------------------------------------------------------------


def test_a_version_page_shows_its_metadata_evaluations_and_history(admin_client, world):
    v = world["version"]
    html = admin_client.get(f"/training/models/{v.pk}/").content.decode()
    for text in (
        v.sha256,
        "224 px",
        "0.485",
        f'href="/training/runs/{world["runs"]["done"].pk}/"',
        "Promote to production",
        "Evaluate on a dataset",
        "Export checkpoint",
        world["evaluations"]["failed"].error,
        "Promotion history",
    ):
        assert text in html, text
    assert f'data-poll-url="/training/models/{v.pk}/evaluations/" data-poll-ms=' in html


def test_the_evaluate_form_queues_an_evaluation(
    admin_client, admin_user, model_version, dataset, sent_tasks, django_capture_on_commit_callbacks
):
    queued = _sent_ids(sent_tasks, RUN_EVALUATION)
    with django_capture_on_commit_callbacks(execute=True):
        resp = admin_client.post(
            f"/training/models/{model_version.pk}/evaluate/",
            {"dataset": dataset.pk, "split": "val"},
        )
    evaluation = Evaluation.objects.get()
    assert resp.status_code == 302
    assert (evaluation.split, evaluation.status, evaluation.created_by) == (
        "val",
        "queued",
        admin_user,
    )
    assert queued() == [evaluation.pk]


def test_the_evaluate_form_refuses_an_unknown_split(admin_client, model_version, dataset):
    resp = admin_client.post(
        f"/training/models/{model_version.pk}/evaluate/",
        {"dataset": dataset.pk, "split": "everything"},
    )
    assert resp.status_code == 400 and "Select a valid choice" in resp.content.decode()
    assert not Evaluation.objects.exists()


def test_promotion_requires_a_reason(admin_client, model_version):
    resp = admin_client.post(f"/training/models/{model_version.pk}/promote/", {"reason": "  "})
    assert resp.status_code == 400
    assert "Give a reason" in resp.content.decode()
    model_version.refresh_from_db()
    assert model_version.status == ModelVersion.Status.CANDIDATE
    assert not ModelPromotion.objects.exists()


def test_promotion_records_who_and_why(admin_client, admin_user, model_version):
    resp = admin_client.post(
        f"/training/models/{model_version.pk}/promote/",
        {"reason": "Better sensitivity on the local test split."},
    )
    assert resp.status_code == 302 and resp["Location"] == f"/training/models/{model_version.pk}/"
    model_version.refresh_from_db()
    assert model_version.status == ModelVersion.Status.PRODUCTION
    promotion = ModelPromotion.objects.get()
    assert (promotion.promoted_by, promotion.reason) == (
        admin_user,
        "Better sensitivity on the local test split.",
    )
    html = admin_client.get(resp["Location"]).content.decode()
    assert "In production since" in html and "Promote to production" not in html
    event = AuditEvent.objects.get(action=AuditEvent.Action.PROMOTE)
    assert event.username == admin_user.username
    assert event.ip_address == "127.0.0.1" and event.path.endswith("/promote/")


def test_rolling_back_restores_an_earlier_version_as_the_only_production_one(
    admin_client, admin_user, production_model
):
    newer = second_version(production_model)
    admin_client.post(f"/training/models/{newer.pk}/promote/", {"reason": "new model"})
    production_model.refresh_from_db()
    assert production_model.status == ModelVersion.Status.RETIRED
    html = admin_client.get(f"/training/models/{production_model.pk}/").content.decode()
    assert "Roll back to this version" in html

    resp = admin_client.post(
        f"/training/models/{production_model.pk}/promote/",
        {"reason": "more false negatives with the new one"},
    )
    assert resp.status_code == 302
    assert list(ModelVersion.objects.filter(status="production")) == [production_model]
    newer.refresh_from_db()
    assert newer.status == ModelVersion.Status.RETIRED
    last = ModelPromotion.objects.order_by("-created_at", "-pk").first()
    assert (last.model_version, last.previous_version, last.promoted_by) == (
        production_model,
        newer,
        admin_user,
    )


def test_promote_returns_to_a_safe_next_page_only(admin_client, model_version):
    resp = admin_client.post(
        f"/training/models/{model_version.pk}/promote/",
        {"reason": "ok", "next": "https://evil.example/"},
    )
    assert resp["Location"] == f"/training/models/{model_version.pk}/"


def test_export_returns_the_checkpoint_with_its_sha256(admin_client, admin_user, model_version):
    resp = admin_client.get(f"/training/models/{model_version.pk}/checkpoint.pt")
    assert resp.status_code == 200
    body = b"".join(resp.streaming_content)
    assert hashlib.sha256(body).hexdigest() == model_version.sha256
    assert resp["X-Checkpoint-SHA256"] == model_version.sha256
    assert (
        f'filename="test-mobilenet-{model_version.sha256[:12]}.pt"' in resp["Content-Disposition"]
    )
    event = AuditEvent.objects.get(action=AuditEvent.Action.DOWNLOAD)
    assert (event.username, event.object_type, event.object_id) == (
        admin_user.username,
        "ModelVersion",
        str(model_version.pk),
    )


def test_the_versions_list_shows_status_metrics_and_promotion(admin_client, production_model):
    candidate = second_version(production_model, metrics={"accuracy": 0.9123, "macro_auc": 0.97})
    html = admin_client.get("/training/models/").content.decode()
    assert candidate.name in html and "0.912" in html and "0.970" in html
    assert "Production" in html and "Candidate" in html
    assert "test" in html  # the fixture's promotion reason


# --------------------------------------------------------------------------------------------------
# Candidate against production
# --------------------------------------------------------------------------------------------------


def test_compare_offers_to_evaluate_what_is_missing_then_polls(
    admin_client, production_model, dataset, sent_tasks, django_capture_on_commit_callbacks
):
    queued = _sent_ids(sent_tasks, RUN_EVALUATION)
    candidate = second_version(production_model)
    url = f"/training/compare/?candidate={candidate.pk}&dataset={dataset.pk}"
    html = admin_client.get(url).content.decode()
    assert "Evaluate candidate and production on this test split" in html
    with django_capture_on_commit_callbacks(execute=True):
        resp = admin_client.post(
            "/training/compare/", {"candidate": candidate.pk, "dataset": dataset.pk}
        )
    assert resp.status_code == 302 and resp["Location"] == url
    evaluations = Evaluation.objects.all()
    assert {(e.model_version_id, e.split) for e in evaluations} == {
        (candidate.pk, "test"),
        (production_model.pk, "test"),
    }
    assert sorted(queued()) == sorted(e.pk for e in evaluations)
    html = admin_client.get(url).content.decode()
    assert "data-poll-ms" in html and "Evaluate candidate" not in html
    # posting again does not queue the same evaluations twice
    admin_client.post("/training/compare/", {"candidate": candidate.pk, "dataset": dataset.pk})
    assert Evaluation.objects.count() == 2


def test_compare_shows_both_metric_sets_with_the_difference(
    admin_client, production_model, dataset
):
    candidate = second_version(production_model)
    c = make_evaluation(candidate, dataset, skill=3.0, seed=1)
    p = make_evaluation(production_model, dataset, skill=1.0, seed=2)
    resp = admin_client.get(
        f"/training/compare/results/?candidate={candidate.pk}&dataset={dataset.pk}"
    )
    html = resp.content.decode()
    diff = c.metrics["accuracy"] - p.metrics["accuracy"]
    assert diff > 0
    assert floatformat(c.metrics["accuracy"], 3) in html
    assert floatformat(p.metrics["accuracy"], 3) in html
    assert f"+{floatformat(diff, 3)}" in html and 'class="diff-better"' in html
    for text in (
        "Balanced accuracy",
        "Macro AUC",
        "ECE",
        "covid19",
        "sensitivity",
        "specificity",
        "AUC",
    ):
        assert text in html, text
    page = admin_client.get(f"/training/compare/?candidate={candidate.pk}&dataset={dataset.pk}")
    assert "Promote second-mobilenet to production" in page.content.decode()


def test_promoting_from_the_compare_page_returns_to_it(admin_client, production_model, dataset):
    candidate = second_version(production_model)
    back = f"/training/compare/?candidate={candidate.pk}&dataset={dataset.pk}"
    resp = admin_client.post(
        f"/training/models/{candidate.pk}/promote/", {"reason": "better on kermany", "next": back}
    )
    assert resp["Location"] == back
    candidate.refresh_from_db()
    assert candidate.is_production
    page = admin_client.get(back)
    assert page.status_code == 200
    assert "second-mobilenet is the production version" in page.content.decode()
    assert "Promote second-mobilenet" not in page.content.decode()


# --------------------------------------------------------------------------------------------------
# The web process never imports torch
# --------------------------------------------------------------------------------------------------

TORCH_FREE_SCRIPT = textwrap.dedent(
    """
    import os, sys, tempfile
    os.environ["DJANGO_SETTINGS_MODULE"] = "cxrweb.settings"
    os.environ["DATABASE_URL"] = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "db.sqlite3")
    os.environ["MEDIA_ROOT"] = tempfile.mkdtemp()
    os.environ["STATIC_ROOT"] = tempfile.mkdtemp()
    os.environ["CXR_DATASET_ROOTS"] = tempfile.gettempdir()
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    call_command("collectstatic", verbosity=0, interactive=False)
    from django.contrib.auth.models import User
    from django.core.files.base import ContentFile
    from django.test import Client
    from cxrweb.celery import app
    from training.models import Dataset, Evaluation, ModelVersion, TrainingRun

    # The broker is not what this checks.
    app.send_task = lambda *args, **kwargs: None
    user = User.objects.create_superuser("a", password="pw-long-enough-1")
    client = Client()
    client.force_login(user)
    folder = tempfile.mkdtemp()
    os.mkdir(os.path.join(folder, "normal"))
    resp = client.post("/training/datasets/", {"name": "new", "root": folder, "seed": "0",
                                               "val_fraction": "0.15", "test_fraction": "0.15"})
    assert resp.status_code == 302, resp.status_code
    classes = ["normal", "pneumonia"]
    dataset = Dataset.objects.create(
        name="d", root=folder, status="ready", classes=classes,
        class_counts={"normal": 2, "pneumonia": 2},
        scan={"samples": [["normal/a.png", 0], ["normal/b.png", 0], ["pneumonia/c.png", 1],
                          ["pneumonia/d.png", 1]]},
        split={"train": [0, 2], "val": [1], "test": [3]})
    png = b"\\x89PNG\\r\\n\\x1a\\n" + b"0" * 64
    run = TrainingRun(dataset=dataset, architecture="resnet18", strategy="head",
                      weights="imagenet", status="done", history=[{"epoch": 1}],
                      result={"test_metrics": {"accuracy": 0.5}})
    run.plot_history.save("h.png", ContentFile(png), save=False)
    run.save()
    running = TrainingRun.objects.create(dataset=dataset, architecture="resnet18",
                                         strategy="head", weights="imagenet", status="running",
                                         progress={"epoch": 1, "epochs": 2, "step": 1, "steps": 2})
    versions = []
    for name in ("v1", "v2"):
        v = ModelVersion(name=name, architecture="resnet18", class_labels=classes, sha256="0" * 64)
        v.weights.save(name + ".pt", ContentFile(b"weights"), save=False)
        v.save()
        versions.append(v)
    v1, v2 = versions
    evaluation = Evaluation.objects.create(model_version=v1, dataset=dataset, status="done",
                                           metrics={"accuracy": 0.5})
    evaluation.plot_roc.save("r.png", ContentFile(png))
    posts = [(f"/training/models/{v1.pk}/promote/", {"reason": "first"}),
             (f"/training/models/{v2.pk}/evaluate/", {"dataset": dataset.pk, "split": "test"}),
             ("/training/compare/", {"candidate": v2.pk, "dataset": dataset.pk}),
             (f"/training/runs/{running.pk}/cancel/", {})]
    for url, data in posts:
        assert client.post(url, data).status_code == 302, url
    gets = ["/training/", "/training/datasets/", f"/training/datasets/{dataset.pk}/",
            f"/training/datasets/{dataset.pk}/status/", "/training/runs/", "/training/runs/new/",
            f"/training/runs/{run.pk}/", f"/training/runs/{running.pk}/status/",
            f"/training/runs/{run.pk}/plots/history.png", "/training/models/",
            f"/training/models/{v1.pk}/", f"/training/models/{v2.pk}/evaluations/",
            f"/training/models/{v1.pk}/checkpoint.pt",
            f"/training/evaluations/{evaluation.pk}/plots/roc.png",
            f"/training/compare/?candidate={v2.pk}&dataset={dataset.pk}",
            f"/training/compare/results/?candidate={v2.pk}&dataset={dataset.pk}"]
    for url in gets:
        assert client.get(url).status_code == 200, url
    # Starting a run validates the whole TrainConfig (training.ml.train.config, torch-free).
    resp = client.post("/training/runs/new/", {
        "dataset": dataset.pk, "architecture": "resnet18", "weights": "imagenet",
        "strategy": "head", "epochs": "1", "batch_size": "2", "warmup_head_epochs": "0",
        "unfreeze_blocks": "2", "imbalance": "none", "early_stopping_patience": "0",
        "seed": "0"})
    assert resp.status_code == 302, resp.status_code
    assert TrainingRun.objects.filter(status="queued").count() == 1
    # training.urls imports every view module.
    import training.urls, training.forms, training.selectors  # noqa: F401
    bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "cv2"))
    print("HEAVY:", bad[:5])
    sys.exit(1 if bad else 0)
    """
)


def test_the_training_pages_never_import_torch():
    """Every page and every form (register, start a run, evaluate, compare, promote, cancel),
    through the Django test client in a fresh process: torch stays out of the web process."""
    env = {**os.environ, "SECRET_KEY": "x", "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    env.pop("DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-c", TORCH_FREE_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "HEAVY: []" in proc.stdout
