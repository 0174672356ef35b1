"""Issue #20 item 6, reading side: a stored file the media storage cannot read is a 503 (JSON on
the API, a plain message in the browser), a missing one a 404, and the PDF report still prints.
Unknown API paths answer JSON, and the read-only views answer HEAD as they answer GET."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.conf import settings
from pypdf import PdfReader

from cxrweb.audit.models import AuditEvent
from diagnosis import services
from diagnosis.worker.heatmaps import class_heatmap_run
from diagnosis.worker.run import prediction_run
from tests import imagegen
from tests.security.upload_helpers import api_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored(radiologist, production_model) -> dict:
    """A study whose prediction and class heatmap are done: files under images/ and heatmaps/."""
    result = services.study_upload(
        uploaded_by=radiologist, data=imagegen.png_bytes(), patient_id="STO-1"
    )
    prediction = prediction_run(prediction_id=result.prediction.pk)
    label = next(c for c in production_model.class_labels if c != prediction.cam_class)
    heatmap = services.class_heatmap_request(prediction=prediction, class_label=label)
    heatmap = class_heatmap_run(heatmap_id=heatmap.pk)
    assert prediction.overlay and heatmap.file, (prediction.error, heatmap.error)
    return {
        "study": result.study,
        "image": result.image,
        "prediction": prediction,
        "class_heatmap": heatmap,
    }


def _replace_folders_by_files() -> None:
    """What the tester did: media/images and media/heatmaps are regular files now, so opening
    any file below them fails in the real filesystem (ENOTDIR, whoever runs the tests)."""
    media = Path(settings.MEDIA_ROOT)
    for name in ("images", "heatmaps"):
        (media / name).rename(media / f"{name}.moved")
        (media / name).write_bytes(b"not a folder")


def _browser_file_urls(s: dict) -> list[str]:
    return [
        f"/images/{s['image'].pk}/display.png",
        f"/images/{s['image'].pk}/original",
        f"/predictions/{s['prediction'].pk}/overlay.png",
        f"/predictions/{s['prediction'].pk}/heatmap-layer.png",
        f"/heatmaps/{s['class_heatmap'].pk}.png",
    ]


def _api_file_urls(s: dict) -> list[str]:
    pk = s["prediction"].pk
    return [
        f"/api/v1/predictions/{pk}/{name}"
        for name in ("overlay.png", "heatmap-layer.png", "heatmap.png", "cam.png")
    ]


def _pdf_text(content: bytes) -> str:
    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


def test_unreadable_storage_is_a_json_503_on_the_api(stored, api_token):
    _replace_folders_by_files()
    api = api_client(api_token)
    for url in _api_file_urls(stored):
        resp = api.get(url)
        assert resp.status_code == 503, url
        assert resp["Content-Type"] == "application/json", url
        assert resp.json()["code"] == "storage_unavailable"
        assert "cannot read the stored file" in resp.json()["error"]
        assert resp["Retry-After"]


def test_unreadable_storage_is_a_plain_503_in_the_browser(stored, rad_client):
    _replace_folders_by_files()
    for url in _browser_file_urls(stored):
        resp = rad_client.get(url)
        assert resp.status_code == 503, url
        assert resp["Content-Type"].startswith("text/plain"), url
        assert "cannot read the stored file" in resp.content.decode()
        assert "Traceback" not in resp.content.decode()


def test_a_file_missing_from_storage_stays_a_404(stored, rad_client, api_token):
    for field in (
        stored["image"].original,
        stored["image"].display,
        stored["prediction"].overlay,
        stored["prediction"].heatmap,
        stored["class_heatmap"].file,
    ):
        Path(field.path).unlink(missing_ok=True)
    for url in _browser_file_urls(stored):
        assert rad_client.get(url).status_code == 404, url
    api = api_client(api_token)
    for url in _api_file_urls(stored):
        resp = api.get(url)
        assert resp.status_code == 404, url
        assert resp["Content-Type"] == "application/json"
        assert "missing from storage" in resp.json()["error"]


def test_the_pdf_report_prints_without_an_unreadable_image(stored, rad_client):
    _replace_folders_by_files()
    resp = rad_client.get(f"/studies/{stored['study'].pk}/report.pdf")
    assert resp.status_code == 200 and resp["Content-Type"] == "application/pdf"
    text = _pdf_text(resp.content)
    assert "(image file unreadable in storage)" in text
    assert "STO-1" in text


def test_the_pdf_report_prints_without_a_missing_image(stored, rad_client):
    Path(stored["prediction"].overlay.path).unlink()
    resp = rad_client.get(f"/studies/{stored['study'].pk}/report.pdf")
    assert resp.status_code == 200
    assert "(image file missing from storage)" in _pdf_text(resp.content)


# --- unknown API paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/nonexist/", "/api/", "/api/v2/studies/", "/api/v1/studies/abc/"]
)
def test_an_unknown_api_path_is_a_json_404(client, path):
    resp = client.get(path)
    assert resp.status_code == 404
    assert resp["Content-Type"] == "application/json"
    assert resp.json()["code"] == "not_found"


def test_an_unknown_page_outside_the_api_is_still_a_page(rad_client):
    resp = rad_client.get("/no-such-page/")
    assert resp.status_code == 404 and resp["Content-Type"].startswith("text/html")


# --- HEAD ----------------------------------------------------------------------------------------


def test_the_read_only_views_answer_head_and_audit_it_as_a_get(stored, rad_client, radiologist):
    """A HEAD runs the view as its GET does (only the body is left out), so it is the same audit
    event: it tells the client that the patient's file exists, its type and its size."""
    urls = [
        *_browser_file_urls(stored),
        f"/studies/{stored['study'].pk}/report.pdf",
        f"/studies/{stored['study'].pk}/",
    ]
    for url in urls:
        before = AuditEvent.objects.count()
        resp = rad_client.head(url)
        assert resp.status_code == 200, url
        assert b"".join(resp.streaming_content if resp.streaming else [resp.content]) == b""
        assert AuditEvent.objects.count() == before + 1, url
        event = AuditEvent.objects.order_by("-pk").first()
        assert event.user == radiologist and event.patient_mrn == "STO-1", url


def test_a_write_method_on_a_file_view_is_still_refused(stored, rad_client):
    resp = rad_client.put(f"/images/{stored['image'].pk}/display.png")
    assert resp.status_code == 405
    assert set(resp["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
