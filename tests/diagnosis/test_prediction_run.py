"""The worker-side service, called directly (the Celery path is in tests/integration)."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from django.utils import timezone
from PIL import Image as PILImage

from diagnosis import services
from diagnosis.models import Image, Prediction, Study
from diagnosis.worker.run import prediction_run
from tests import imagegen
from tests.conftest import CLASSES


@pytest.fixture
def queued(radiologist, production_model):
    return services.study_upload(
        uploaded_by=radiologist,
        data=imagegen.png_bytes(imagegen.make_xray(320, 256)),
        patient_id="MRN-RUN",
    ).prediction


def test_it_stores_probabilities_label_heatmap_and_timings(queued):
    done = prediction_run(prediction_id=queued.pk, worker="w1")
    assert done.status == Prediction.Status.DONE
    assert list(done.ordered_probabilities) == CLASSES
    assert sum(done.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert done.label == max(done.probabilities, key=done.probabilities.get)
    assert done.cam_class == done.label
    assert done.cam_method == "Grad-CAM"
    assert done.started_at <= done.finished_at
    assert done.compute_ms > 0
    assert done.device == "cpu"
    assert done.attempts == 1
    with PILImage.open(done.heatmap.path) as heatmap:
        assert heatmap.mode == "RGBA"
        assert heatmap.size[0] / heatmap.size[1] == pytest.approx(320 / 256, rel=0.02)
    with PILImage.open(done.overlay.path) as overlay:
        assert overlay.mode == "RGB"


def test_a_second_delivery_does_not_redo_finished_work(queued):
    first = prediction_run(prediction_id=queued.pk, worker="w1")
    again = prediction_run(prediction_id=queued.pk, worker="w2")
    assert again is None
    first_again = Prediction.objects.get(pk=queued.pk)
    assert first_again.finished_at == first.finished_at
    assert first_again.worker == "w1"
    assert first_again.attempts == 1
    assert Prediction.objects.filter(image=queued.image).count() == 1


def test_a_prediction_running_elsewhere_is_left_alone(queued):
    Prediction.objects.filter(pk=queued.pk).update(status="running", started_at=timezone.now())
    assert prediction_run(prediction_id=queued.pk, worker="w2") is None
    assert Prediction.objects.get(pk=queued.pk).status == "running"


def test_an_abandoned_running_prediction_is_claimed_again(queued, settings):
    long_ago = timezone.now() - dt.timedelta(seconds=settings.CXR_PREDICTION_STALE_AFTER_S + 5)
    Prediction.objects.filter(pk=queued.pk).update(
        status="running", started_at=long_ago, attempts=1
    )
    done = prediction_run(prediction_id=queued.pk, worker="w2")
    assert done.status == "done"
    assert done.attempts == 2


def test_it_gives_up_after_the_attempt_limit(queued, settings):
    long_ago = timezone.now() - dt.timedelta(seconds=settings.CXR_PREDICTION_STALE_AFTER_S + 5)
    Prediction.objects.filter(pk=queued.pk).update(
        status="running", started_at=long_ago, attempts=settings.CXR_PREDICTION_MAX_ATTEMPTS
    )
    failed = prediction_run(prediction_id=queued.pk, worker="w2")
    assert failed.status == "failed"
    assert "Gave up" in failed.error


def test_a_missing_weights_file_fails_with_a_clear_message_and_keeps_the_study(
    queued, production_model
):
    os.remove(production_model.weights.path)
    failed = prediction_run(prediction_id=queued.pk, worker="w1")
    assert failed.status == "failed"
    assert "weights file" in failed.error and "missing" in failed.error
    assert Study.objects.filter(pk=queued.image.study_id).exists()
    assert Image.objects.filter(pk=queued.image_id).exists()


def test_a_tampered_weights_file_is_refused(queued, production_model):
    with open(production_model.weights.path, "ab") as fh:
        fh.write(b"tampered")
    failed = prediction_run(prediction_id=queued.pk, worker="w1")
    assert failed.status == "failed"
    assert "sha256" in failed.error


def test_a_failed_prediction_can_be_rerun_and_then_succeeds(queued, production_model):
    path = production_model.weights.path
    saved = open(path, "rb").read()
    os.remove(path)
    assert prediction_run(prediction_id=queued.pk).status == "failed"
    with open(path, "wb") as fh:
        fh.write(saved)
    services.prediction_rerun(prediction=Prediction.objects.get(pk=queued.pk))
    done = prediction_run(prediction_id=queued.pk)
    assert done.status == "done"


def test_a_waiting_prediction_is_not_run(radiologist):
    waiting = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="M"
    ).prediction
    assert prediction_run(prediction_id=waiting.pk) is None
    assert Prediction.objects.get(pk=waiting.pk).status == "queued"


@pytest.mark.parametrize(
    "data",
    [
        imagegen.jpeg_bytes(imagegen.make_xray(2200, 1700, seed=4)),
        imagegen.dicom_bytes(width=2200, height=1700, patient_id="MRN-BIG"),
    ],
    ids=["jpeg", "dicom"],
)
def test_a_large_image_is_read_as_training_reads_it(radiologist, production_model, data):
    """A 2,200-pixel X-ray is read at half size by the worker (a grayscale JPEG by its decoder,
    a DICOM's display copy by 2x2 averaging), pixel for pixel as the training loader reads the
    same file, and still gives a full-size overlay."""
    import numpy as np

    from diagnosis.worker.compute import open_display
    from training.ml.preprocessing import Preprocessing, reading_long_side
    from training.ml.train.dataset import load_image

    upload = services.study_upload(uploaded_by=radiologist, data=data, patient_id="MRN-BIG")
    image = upload.image
    assert (image.width, image.height) == (2200, 1700)

    prep = Preprocessing.from_dict(production_model.preprocessing_dict())
    worker_reads = open_display(image, prep)
    training_reads = load_image(image.original.path, read_long_side=reading_long_side(prep))
    assert worker_reads.size == (1100, 850)
    assert np.array_equal(np.asarray(worker_reads), np.asarray(training_reads))

    done = prediction_run(prediction_id=upload.prediction.pk, worker="w1")
    assert done.status == Prediction.Status.DONE
    with PILImage.open(done.overlay.path) as overlay:
        assert overlay.size == (1024, 791)
