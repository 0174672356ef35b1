"""Issue #20 item 6: errors stay JSON on the API, pages in the browser, and a worker that cannot
store its heatmap says so on the row at once."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from diagnosis import services
from diagnosis.models import Prediction
from tests import imagegen
from tests.conftest import wait_for
from tests.security.upload_helpers import (
    API_URL,
    UPLOAD_URL,
    api_client,
    post_api,
    post_form,
    stored,
)


@pytest.fixture
def media_under_a_file(settings, tmp_path):
    """MEDIA_ROOT below a regular file: every write fails in the real filesystem (ENOTDIR),
    whoever runs the tests (root ignores permission bits, not this)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    settings.MEDIA_ROOT = blocker / "media"
    return blocker


@pytest.mark.django_db
def test_an_unwritable_media_root_is_a_json_503_and_stores_nothing(api_token, media_under_a_file):
    before = stored()
    resp = post_api(api_client(api_token), imagegen.png_bytes(), patient_id="ERR-1")
    assert resp.status_code == 503
    assert resp["Content-Type"] == "application/json"
    assert resp.json()["code"] == "storage_unavailable"
    assert "nothing was stored" in resp.json()["error"]
    assert stored() == before


@pytest.mark.django_db
def test_the_form_says_the_storage_failed_in_the_page(rad_client, media_under_a_file):
    resp = post_form(rad_client, imagegen.png_bytes(), patient_id="ERR-2")
    assert resp.status_code == 503
    page = resp.content.decode()
    assert "could not store the image" in page and "Traceback" not in page
    assert stored()["images"] == 0


@pytest.mark.django_db
def test_too_many_fields_is_a_json_400_on_the_api(api_token, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    fields = {f"f{i}": "x" for i in range(10)}
    resp = post_api(api_client(api_token), imagegen.png_bytes(), patient_id="ERR-3", **fields)
    assert resp.status_code == 400
    assert resp.json()["code"] == "too_many_fields" and "more than 5" in resp.json()["error"]
    assert stored()["images"] == 0


@pytest.mark.django_db
def test_too_many_files_is_a_json_400_on_the_api(api_token, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 1
    files = [SimpleUploadedFile(f"{i}.png", imagegen.png_bytes(seed=i)) for i in range(2)]
    resp = api_client(api_token).post(
        API_URL, {"image": files, "patient_id": "ERR-4"}, format="multipart"
    )
    assert resp.status_code == 400
    assert resp.json()["code"] == "too_many_files"
    assert stored()["images"] == 0


@pytest.mark.django_db
def test_too_many_fields_in_the_browser_is_a_page_not_a_traceback(rad_client, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    fields = {f"f{i}": "x" for i in range(10)}
    resp = rad_client.post(UPLOAD_URL, {"image": SimpleUploadedFile("a.png", b"x"), **fields})
    assert resp.status_code == 400
    assert resp["Content-Type"].startswith("text/html")
    page = resp.content.decode()
    assert "more than 5 form fields" in page and "Back to the upload page" in page


def test_a_worker_that_cannot_write_its_heatmap_retries_then_fails_at_once(
    radiologist, production_model, celery_worker, settings
):
    settings.CXR_PREDICTION_MAX_ATTEMPTS = 2
    settings.CXR_RETRY_DELAY_S = 0
    (settings.MEDIA_ROOT / "heatmaps").parent.mkdir(parents=True, exist_ok=True)
    (settings.MEDIA_ROOT / "heatmaps").write_bytes(b"")  # heatmaps/<id>/ cannot be made
    queued = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(seed=61), patient_id="ERR-W"
    ).prediction

    def failed():
        """the prediction to fail on its storage error"""
        return Prediction.objects.filter(pk=queued.pk, status="failed").first()

    # Far below the 11 minutes after which the reconciler would find a stale "running" row.
    row = wait_for(failed, timeout=120)
    assert row.attempts == 2
    assert "could not be stored (Not a directory)" in row.error
    assert not row.heatmap and not row.overlay
