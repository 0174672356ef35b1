"""``manage.py calibrate``: a site calibration of a model version on a dataset the test makes or
on signed readings, stored as a new numbered calibration of the same weights, audited, activated
into the version's live fields; and the refusals."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from cxrweb.audit.models import AuditEvent
from tests.training.ml.imagefolders import CLASSES, make_folder
from training.ml.ood import OODReference
from training.models import ModelCalibration, ModelVersion
from training.services import (
    CalibrationRejected,
    calibration_activate,
    calibration_request,
    dataset_register,
    model_version_import,
)


@pytest.fixture(autouse=True)
def _settings(settings, tmp_path):
    settings.CXR_DATASET_ROOTS = [tmp_path]
    settings.CXR_CALIBRATION_MIN_IMAGES = 8


@pytest.fixture
def dataset(db, tmp_path):
    return dataset_register(name="site", root=str(make_folder(tmp_path / "site", per_class=6)))


@pytest.fixture
def version(db, state_dict_file):
    return model_version_import(
        path=state_dict_file("mobilenet_v2", len(CLASSES)),
        architecture="mobilenet_v2",
        classes=CLASSES,
        name="tiny-v1",
    )


def _calibrate(*args: str) -> str:
    out = StringIO()
    call_command("calibrate", "tiny-v1", *args, stdout=out)
    return out.getvalue()


def test_an_imported_version_starts_with_calibration_1_active(version):
    [first] = version.calibrations.all()
    assert (first.number, first.kind, first.status) == (1, "training", "done")
    assert first.temperature == version.temperature == 1.0
    assert first.is_active and version.calibration_number == 1


def test_it_fits_a_new_calibration_on_a_dataset_and_activates_it(version, dataset):
    out = _calibrate("--dataset", "site", "--split", "all", "--activate")

    calibration = ModelCalibration.objects.get(version=version, number=2)
    assert calibration.status == "done", calibration.error
    assert calibration.source == "dataset site split all"
    assert calibration.n_images == dataset.size == 12
    assert calibration.target_sensitivity == 0.9
    assert set(calibration.thresholds) == set(CLASSES)
    assert calibration.temperature > 0
    for when in ("before", "after"):
        figures = calibration.metrics[when]
        assert figures["ece"] is not None and figures["nll"] is not None
        assert set(figures["per_class"]) == set(CLASSES)
    # At the new thresholds each class keeps at least the target share of its images flagged.
    for name in CLASSES:
        assert calibration.metrics["after"]["per_class"][name]["sensitivity"] >= 0.9
    # The OOD reference: a small .npz the contract's loader reads, its threshold in the summary.
    reference = OODReference.load(calibration.ood_reference.path)
    assert calibration.ood_summary["threshold"] == pytest.approx(reference.threshold)
    assert reference.n_train + 4 == 12  # 30 % of each class (2 of 6) held out to threshold it
    assert "Calibration 2 of tiny-v1" in out and "now active" in out

    version.refresh_from_db()
    assert version.calibration_number == 2
    assert version.temperature == calibration.temperature
    assert version.thresholds == calibration.thresholds
    assert version.ood_reference.name == calibration.ood_reference.name
    assert version.ood_summary == calibration.ood_summary
    assert not ModelCalibration.objects.get(version=version, number=1).is_active


def test_fitting_and_activating_are_audited(version, dataset):
    _calibrate("--dataset", "site", "--split", "all", "--activate")

    fitted = AuditEvent.objects.get(action=AuditEvent.Action.CALIBRATE)
    assert (fitted.object_type, fitted.object_id) == ("ModelVersion", str(version.pk))
    assert fitted.detail["calibration"] == 2 and fitted.detail["n_images"] == 12
    assert fitted.detail["source"] == "dataset site split all"
    activated = AuditEvent.objects.get(action=AuditEvent.Action.ACTIVATE_CALIBRATION)
    assert activated.detail["previous"] == 1 and activated.detail["calibration"] == 2


def test_without_activate_the_version_keeps_its_calibration(version, dataset):
    out = _calibrate("--dataset", "site", "--split", "all", "--target-sensitivity", "0.5")

    version.refresh_from_db()
    assert version.calibration_number == 1 and version.temperature == 1.0
    assert ModelCalibration.objects.get(number=2).target_sensitivity == 0.5
    assert "Not active" in out
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.ACTIVATE_CALIBRATION).exists()


def test_an_older_calibration_can_be_activated_again(version, dataset):
    _calibrate("--dataset", "site", "--split", "all", "--activate")
    first = ModelCalibration.objects.get(version=version, number=1)

    version = calibration_activate(calibration=first)

    assert version.calibration_number == 1 and version.temperature == first.temperature
    assert version.thresholds == first.thresholds
    assert len(ModelCalibration.objects.get(pk=first.pk).activations) == 2


def test_it_refuses_too_few_images(version, dataset, settings):
    settings.CXR_CALIBRATION_MIN_IMAGES = 50
    with pytest.raises(CommandError, match=r"Only 12 usable image\(s\); .* at least 50"):
        _calibrate("--dataset", "site", "--split", "all")
    failed = ModelCalibration.objects.get(version=version, number=2)
    assert failed.status == "failed" and "at least 50" in failed.error
    assert ModelVersion.objects.get(pk=version.pk).calibration_number == 1


def test_it_refuses_a_class_with_no_example(dataset, state_dict_file):
    model_version_import(
        path=state_dict_file("mobilenet_v2", 3),
        architecture="mobilenet_v2",
        classes=[*CLASSES, "middle"],
        name="tiny-v1",
    )
    with pytest.raises(CommandError, match=r"No image of class\(es\) middle"):
        _calibrate("--dataset", "site", "--split", "all")


def test_it_refuses_class_names_the_version_does_not_know(version, tmp_path):
    root = make_folder(tmp_path / "other", per_class=6)
    (root / "right").rename(root / "TUBERCULOSIS")
    dataset_register(name="other", root=str(root))
    with pytest.raises(CommandError, match="TUBERCULOSIS that tiny-v1 does not know"):
        _calibrate("--dataset", "other", "--split", "all")


def test_it_refuses_a_bad_request_before_anything_is_stored(version, dataset):
    with pytest.raises(CalibrationRejected, match="target sensitivity"):
        calibration_request(version=version, dataset=dataset, split="all", target_sensitivity=0)
    with pytest.raises(CommandError, match="at least 1"):
        _calibrate("--readings", "0")
    assert list(version.calibrations.values_list("number", flat=True)) == [1]


def test_the_button_path_queues_a_training_task(
    version, dataset, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        calibration = calibration_request(
            version=version, dataset=dataset, split="val", target_sensitivity=0.9
        )
    assert calibration.status == "queued" and calibration.number == 2
    assert [(t.name, t.args) for t in sent_tasks] == [
        ("training.tasks.run_calibration", (calibration.pk,))
    ]


def test_logits_recovered_from_stored_probabilities_give_the_same_softmax():
    from training.ml.train.calibration import softmax
    from training.ml.train.recalibrate import logits_from_probabilities

    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    probs = softmax(logits, 1.7)
    assert np.allclose(softmax(logits_from_probabilities(probs, 1.7), 1.7), probs)
    assert np.allclose(softmax(logits_from_probabilities(probs, 1.7), 1.0), softmax(logits, 1.0))


def test_the_training_task_fits_a_queued_calibration(version, dataset):
    from training.tasks import run_calibration

    calibration = calibration_request(
        version=version, dataset=dataset, split="all", target_sensitivity=0.9, enqueue=False
    )
    run_calibration(calibration.pk)
    run_calibration(calibration.pk)  # a redelivered message finds it done and does nothing

    calibration.refresh_from_db()
    assert calibration.status == "done" and calibration.n_images == 12
    assert AuditEvent.objects.filter(action=AuditEvent.Action.CALIBRATE).count() == 1


def test_readings_logits_use_the_temperature_active_when_each_prediction_was_made(version):
    import datetime as dt

    from training.services.calibration_data import _temperature_at

    first = version.calibrations.get(number=1)
    hot = ModelCalibration.objects.create(
        version=version, number=2, kind="dataset", status="done", temperature=3.0
    )
    calibration_activate(calibration=hot)
    calibration_activate(calibration=first)  # and back
    hot_since = dt.datetime.fromisoformat(ModelCalibration.objects.get(pk=hot.pk).activations[0])
    back_since = dt.datetime.fromisoformat(ModelCalibration.objects.get(pk=first.pk).activations[1])
    at_time = _temperature_at(ModelVersion.objects.get(pk=version.pk))

    assert at_time(hot_since - dt.timedelta(seconds=1)) == 1.0  # calibration 1, before
    assert at_time(hot_since + (back_since - hot_since) / 2) == 3.0  # while 2 was active
    assert at_time(back_since + dt.timedelta(seconds=1)) == 1.0  # 1 again
    assert at_time(None) == 1.0  # unknown: the active one's


def test_it_refuses_weights_that_do_not_match_their_sha256(version, dataset):
    with open(version.weights.path, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(CommandError, match="does not match its recorded sha256"):
        _calibrate("--dataset", "site", "--split", "all")
