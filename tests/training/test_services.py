"""The training app's services on tiny folders the tests make: register, train, evaluate,
cancel, notice a dead worker, export and import, promote and roll back."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from diagnosis.worker.run import prediction_run
from tests import imagegen
from tests.training.ml.imagefolders import make_folder
from training.ml.ood import OODReference
from training.models import Dataset, Evaluation, ModelVersion, TrainingRun
from training.services import (
    DatasetRejected,
    TrainingRejected,
    dataset_register,
    evaluation_create,
    evaluation_execute,
    model_version_promote,
    training_run_cancel,
    training_run_create,
    training_run_execute,
    training_runs_reconcile,
)

TINY = {
    "arch": "mobilenet_v2",
    "weights": None,
    "strategy": "head",
    "epochs": 2,
    "batch_size": 8,
    "input_size": 32,
    "max_steps_per_epoch": 3,
    "early_stopping_patience": None,
}


@pytest.fixture(autouse=True)
def _dataset_roots(settings, tmp_path):
    """Folders registered here are made under tmp_path (CXR_DATASET_ROOTS)."""
    settings.CXR_DATASET_ROOTS = [tmp_path]


@pytest.fixture
def folder(tmp_path):
    root = make_folder(tmp_path / "data", per_class=14)
    (root / "left" / "broken.png").write_bytes(imagegen.truncated_png())
    (root / "left" / "README.txt").write_text("not an image")
    (root / "right" / "scan.dcm").write_bytes(imagegen.dicom_bytes(width=24, height=24))
    return root


@pytest.fixture
def dataset(db, folder):
    return dataset_register(name="tiny", root=str(folder))


def test_registering_a_folder_lists_unreadable_files_and_stores_a_stratified_split(dataset):
    assert dataset.status == Dataset.Status.READY
    assert dataset.classes == ["left", "right"]
    assert dataset.class_counts == {"left": 14, "right": 15}  # the DICOM counts
    assert [u[0] for u in dataset.unreadable] == ["left/broken.png"]
    split = dataset.split
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(dataset.size))
    labels = [s[1] for s in dataset.scan["samples"]]
    assert {labels[i] for i in split["test"]} == {0, 1}


def test_registering_a_missing_or_flat_folder_is_refused_clearly(db, tmp_path):
    with pytest.raises(DatasetRejected, match="No such folder"):
        dataset_register(name="x", root=str(tmp_path / "nope"))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(imagegen.png_bytes())
    failed = dataset_register(name="flat", root=str(tmp_path / "flat"))
    assert failed.status == Dataset.Status.FAILED and "class" in failed.error


def test_the_register_dataset_command_prints_counts_and_unreadable_files(db, folder, capsys):
    call_command("register_dataset", "cmd", str(folder), "--seed", "3")
    out = capsys.readouterr().out
    assert "29 images" in out and "left/broken.png" in out
    assert Dataset.objects.get(name="cmd").split_seed == 3


def test_a_run_trains_and_registers_a_candidate_with_its_metrics_and_plots(dataset, settings):
    settings.CXR_OOD_PERCENTILE = 95.0
    run = training_run_create(dataset=dataset, config=TINY, enqueue=False)
    seen = []
    run = training_run_execute(run_id=run.pk, on_progress=seen.append)
    assert run.status == TrainingRun.Status.DONE, run.error
    assert len(run.history) == 2
    assert {p["phase"] for p in seen} >= {"train", "val", "test"}
    assert run.progress and run.heartbeat_at
    version = ModelVersion.objects.get(training_run=run)
    assert version.status == ModelVersion.Status.CANDIDATE
    assert version.class_labels == ["left", "right"]
    assert version.input_size == 32
    m = version.metrics
    assert set(m["per_class"]) == {"left", "right"}
    assert "confusion_matrix" in m and "ece" in m
    assert set(version.thresholds) == {"left", "right"}
    for field in ("plot_history", "plot_confusion", "plot_roc", "plot_reliability"):
        assert getattr(run, field).name.endswith(".png"), field
    # The OOD reference, fitted on the train split and thresholded on val, stored with it.
    assert version.ood_reference.name.endswith(".ood.npz")
    reference = OODReference.load(version.ood_reference.path)
    assert version.ood_summary["threshold"] == pytest.approx(reference.threshold)
    assert version.ood_summary["percentile"] == 95.0 == reference.percentile
    assert version.ood_summary["feature_dim"] == 1280  # mobilenet_v2's pooled features
    assert 0.0 <= version.ood_summary["test_flagged_share"] <= 1.0
    assert training_run_execute(run_id=run.pk) is None  # idempotent


def test_a_bad_configuration_is_refused_before_anything_runs(dataset, settings, tmp_path):
    settings.CXR_WEIGHTS_ROOTS = [tmp_path]
    with pytest.raises(TrainingRejected):
        training_run_create(dataset=dataset, config={**TINY, "epochs": 0})
    with pytest.raises(TrainingRejected, match="does not exist"):
        training_run_create(dataset=dataset, config={**TINY, "weights": str(tmp_path / "no.pth")})
    assert TrainingRun.objects.count() == 0


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "/nope/weights.pth", "{roots}/../outside.pth", "{roots}/link.pth"]
)
def test_a_weights_file_outside_the_weights_roots_is_refused_alike_whether_it_exists_or_not(
    dataset, settings, tmp_path, path
):
    roots = tmp_path / "weights"
    roots.mkdir()
    (tmp_path / "outside.pth").write_bytes(b"x")
    (roots / "link.pth").symlink_to(tmp_path / "outside.pth")
    settings.CXR_WEIGHTS_ROOTS = [roots]
    with pytest.raises(TrainingRejected) as refused:
        training_run_create(dataset=dataset, config={**TINY, "weights": path.format(roots=roots)})
    assert "CXR_WEIGHTS_ROOTS" in str(refused.value)
    assert "outside" not in str(refused.value) and "passwd" not in str(refused.value)
    assert TrainingRun.objects.count() == 0


def test_a_weights_file_under_the_weights_roots_is_taken(dataset, settings, tmp_path):
    settings.CXR_WEIGHTS_ROOTS = [tmp_path]
    (tmp_path / "backbone.pth").write_bytes(b"x")
    run = training_run_create(
        dataset=dataset, enqueue=False, config={**TINY, "weights": str(tmp_path / "backbone.pth")}
    )
    assert run.weights == str(tmp_path / "backbone.pth")


def test_a_queued_run_is_cancelled_at_once_and_a_running_one_stops(dataset):
    queued = training_run_create(dataset=dataset, config=TINY, enqueue=False)
    assert training_run_cancel(run=queued).status == TrainingRun.Status.CANCELLED
    assert training_run_execute(run_id=queued.pk) is None
    run = training_run_create(dataset=dataset, config={**TINY, "epochs": 60}, enqueue=False)

    def cancel_after_first_epoch(p):
        if p.get("phase") == "val":
            TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)

    run = training_run_execute(run_id=run.pk, on_progress=cancel_after_first_epoch)
    assert run.status == TrainingRun.Status.CANCELLED
    assert len(run.history) < 60


def test_a_run_whose_worker_died_is_not_left_running(dataset, settings):
    run = training_run_create(dataset=dataset, config=TINY, enqueue=False)
    old = timezone.now() - dt.timedelta(seconds=settings.CXR_TRAINING_STALE_AFTER_S + 5)
    TrainingRun.objects.filter(pk=run.pk).update(
        status="running", heartbeat_at=old, worker="elsewhere:1"
    )
    assert training_runs_reconcile() == 1
    run.refresh_from_db()
    assert run.status == "failed" and "worker" in run.error


@pytest.fixture
def trained(dataset):
    run = training_run_execute(
        run_id=training_run_create(dataset=dataset, config=TINY, enqueue=False).pk
    )
    return ModelVersion.objects.get(training_run=run)


def test_an_evaluation_is_stored_with_metrics_and_plots(trained, dataset, capsys):
    evaluation = evaluation_execute(
        evaluation_id=evaluation_create(
            version=trained, dataset=dataset, split="test", enqueue=False
        ).pk
    )
    assert evaluation.status == Evaluation.Status.DONE, evaluation.error
    assert evaluation.metrics["n"] == len(dataset.split["test"])
    assert evaluation.plot_confusion.name.endswith(".png")
    call_command("evaluate_model", trained.name, "--dataset", "tiny", "--split", "all")
    assert "sensitivity" in capsys.readouterr().out
    assert Evaluation.objects.filter(split="all", status="done").count() == 1


def test_an_exported_checkpoint_imports_elsewhere_with_its_metadata_and_sha256(trained):
    call_command("import_model", trained.weights.path, "--name", "copy", "--sha256", trained.sha256)
    copy = ModelVersion.objects.get(name="copy")
    assert copy.architecture == trained.architecture
    assert copy.class_labels == trained.class_labels
    assert copy.temperature == pytest.approx(trained.temperature)
    assert copy.thresholds == pytest.approx(trained.thresholds)
    assert copy.input_size == 32
    with pytest.raises(CommandError, match="sha256"):
        call_command("import_model", trained.weights.path, "--name", "bad", "--sha256", "0" * 64)


def test_promote_then_roll_back_and_each_new_upload_uses_the_production_version(
    trained, model_version, radiologist
):
    from diagnosis import services

    model_version_promote(override_reason="test weights", version=model_version, reason="first")
    first = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="P1"
    ).prediction
    model_version_promote(
        override_reason="test weights", version=trained, reason="better on the test split"
    )
    second = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="P2"
    ).prediction
    model_version_promote(override_reason="test weights", version=model_version, reason="roll back")
    third = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="P3"
    ).prediction
    assert [first.model_version, second.model_version, third.model_version] == [
        model_version,
        trained,
        model_version,
    ]
    first.refresh_from_db()
    assert first.model_version == model_version  # every prediction keeps its version
    assert list(ModelVersion.objects.filter(status="production")) == [model_version]
    assert [p.reason for p in model_version.promotions.order_by("created_at")] == [
        "first",
        "roll back",
    ]
    done = prediction_run(prediction_id=second.pk)
    assert list(done.ordered_probabilities) == ["left", "right"]  # the new version's classes
