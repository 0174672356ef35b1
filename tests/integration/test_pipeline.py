"""Upload -> real Redis -> real Celery worker -> prediction and heatmap read back.

The worker is Celery's own test worker (celery.contrib.testing), consuming the `inference` queue
of the Redis broker in CXR_TEST_BROKER_URL; the database is the one in DATABASE_URL.
"""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage
from rest_framework.test import APIClient

from diagnosis.models import Prediction, Study
from tests import imagegen
from tests.conftest import CLASSES, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def api(api_token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    return client


def _finished(api, prediction_url: str):
    def finished():
        """the prediction to finish"""
        body = api.get(prediction_url).json()
        return body if body["status"] in ("done", "failed") else None

    return finished


def test_an_api_upload_is_answered_by_the_worker_with_probabilities_and_a_heatmap(
    api, production_model, celery_worker
):
    resp = api.post(
        "/api/v1/studies/",
        {
            "image": SimpleUploadedFile(
                "cxr.jpg", imagegen.jpeg_bytes(imagegen.make_xray(400, 360))
            ),
            "patient_id": "INT-1",
            "view": "PA",
        },
        format="multipart",
    )
    assert resp.status_code == 201, resp.content
    [prediction] = resp.json()["predictions"]
    body = wait_for(_finished(api, prediction["url"]))
    assert body["status"] == "done", body
    assert body["model_version"] == production_model.name
    assert list(body["probabilities"]) == CLASSES
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["error"] is None
    overlay = api.get(body["overlay_url"])
    assert overlay.status_code == 200
    assert overlay["Content-Type"] == "image/png"
    picture = PILImage.open(io.BytesIO(b"".join(overlay.streaming_content)))
    assert picture.mode == "RGB" and max(picture.size) <= 1024
    assert APIClient().get(body["overlay_url"]).status_code == 401  # the token is required


def test_a_dicom_upload_through_the_browser_form_is_analysed(
    client, radiologist, production_model, celery_worker
):
    client.force_login(radiologist)
    data = imagegen.dicom_bytes(
        photometric="MONOCHROME1", patient_id="INT-DCM", accession="ACC-INT-DCM", view="AP"
    )
    resp = client.post("/studies/upload/", {"image": SimpleUploadedFile("scan.dcm", data)})
    assert resp.status_code == 302, resp.content.decode()[:2000]
    study = Study.objects.get(accession_number="ACC-INT-DCM")
    assert study.patient.mrn == "INT-DCM"

    def done():
        """the DICOM prediction to be done"""
        return Prediction.objects.filter(image__study=study, status="done").first()

    prediction = wait_for(done)
    page = client.get(resp["Location"]).content.decode()
    assert prediction.label in page
    assert production_model.name in page
    assert f"/predictions/{prediction.pk}/heatmap-layer.png" in page


def test_a_waiting_upload_runs_once_a_model_is_promoted(api, model_version, celery_worker):
    from training.services import model_version_promote

    resp = api.post(
        "/api/v1/studies/",
        {
            "image": SimpleUploadedFile("a.png", imagegen.png_bytes()),
            "patient_id": "INT-W",
        },
        format="multipart",
    )
    [prediction] = resp.json()["predictions"]
    assert prediction["status"] == "queued" and prediction["model_version"] is None
    model_version_promote(
        override_reason="test weights", version=model_version, reason="first model"
    )
    body = wait_for(_finished(api, prediction["url"]))
    assert body["status"] == "done"
    assert body["model_version"] == model_version.name


def test_a_redelivered_task_does_not_create_or_redo_a_prediction(
    api, production_model, celery_worker
):
    from diagnosis.dispatch import RUN_PREDICTION, send

    resp = api.post(
        "/api/v1/studies/",
        {
            "image": SimpleUploadedFile("a.png", imagegen.png_bytes()),
            "patient_id": "INT-R",
        },
        format="multipart",
    )
    [prediction] = resp.json()["predictions"]
    first = wait_for(_finished(api, prediction["url"]))
    # The broker delivers the same task again (e.g. after a visibility timeout).
    send(RUN_PREDICTION, prediction["id"])
    send(RUN_PREDICTION, prediction["id"])

    def both_consumed():
        """the repeated messages to be consumed"""
        import redis

        from tests.conftest import TEST_BROKER_URL

        return redis.Redis.from_url(TEST_BROKER_URL).llen("inference") == 0

    wait_for(both_consumed)
    celery_worker  # noqa: B018 - the worker must still be running here
    row = Prediction.objects.get(pk=prediction["id"])
    assert Prediction.objects.filter(image_id=row.image_id).count() == 1
    assert row.attempts == 1
    assert row.finished_at.isoformat().replace("+00:00", "Z")[:19] == first["finished_at"][:19]


def test_a_worker_failure_marks_the_prediction_failed_and_it_can_be_rerun(
    api, production_model, celery_worker
):
    import os

    path = production_model.weights.path
    saved = open(path, "rb").read()
    os.remove(path)
    resp = api.post(
        "/api/v1/studies/",
        {
            "image": SimpleUploadedFile("a.png", imagegen.png_bytes()),
            "patient_id": "INT-F",
        },
        format="multipart",
    )
    [prediction] = resp.json()["predictions"]
    body = wait_for(_finished(api, prediction["url"]))
    assert body["status"] == "failed"
    assert "missing" in body["error"]
    assert Study.objects.filter(pk=resp.json()["id"]).exists()

    with open(path, "wb") as fh:
        fh.write(saved)
    from diagnosis import services

    services.prediction_rerun(prediction=Prediction.objects.get(pk=prediction["id"]))
    body = wait_for(_finished(api, prediction["url"]))
    assert body["status"] == "done"
