"""Out-of-distribution through the real pipeline: an API upload -> real Redis -> real Celery
worker -> the predictor's OOD result stored on the prediction -> the study unreliable in the API
and on the study page. The version has no OOD reference (weights=None), so the image checks are
what flag: a nearly uniform picture is no radiograph."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage
from rest_framework.test import APIClient

from diagnosis.models import Prediction, Study
from diagnosis.results import NO_OOD_CHECK, UNRELIABLE_LABEL
from tests import imagegen
from tests.conftest import CLASSES, wait_for
from training.models import ModelVersion

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _upload(api, data: bytes, name: str, patient: str) -> dict:
    resp = api.post(
        "/api/v1/studies/",
        {"image": SimpleUploadedFile(name, data), "patient_id": patient},
        format="multipart",
    )
    assert resp.status_code == 201, resp.content
    return resp.json()


def _done(api, url: str) -> dict:
    def finished():
        """the prediction to finish"""
        body = api.get(url).json()
        return body if body["status"] in ("done", "failed") else None

    body = wait_for(finished)
    assert body["status"] == "done", body
    return body


def test_a_blank_picture_is_flagged_by_the_worker_and_the_study_is_unreliable(
    api_token, rad_client, production_model, celery_worker
):
    ModelVersion.objects.filter(pk=production_model.pk).update(normal_classes=CLASSES)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    rng = np.random.default_rng(0)
    blank = PILImage.fromarray(
        (128 + rng.normal(0, 1, (300, 300))).clip(0, 255).astype(np.uint8), "L"
    )
    ood_study = _upload(api, imagegen.png_bytes(blank), "blank.png", "OODE-1")
    xray_study = _upload(api, imagegen.png_bytes(imagegen.make_xray(300, 300)), "x.png", "OODE-2")

    flagged = _done(api, ood_study["predictions"][0]["url"])
    assert flagged["ood"]["flagged"] is True
    assert flagged["ood"]["score"] is None  # no reference: only the image checks
    assert any("nearly uniform" in r for r in flagged["ood"]["reasons"])
    stored = Prediction.objects.get(pk=flagged["id"])
    assert stored.ood_flagged and stored.ood_reasons == flagged["ood"]["reasons"]

    plain = _done(api, xray_study["predictions"][0]["url"])
    assert plain["ood"] == {
        "score": None,
        "threshold": None,
        "flagged": False,
        "reasons": [],
        "checked": False,  # the version has no OOD reference, and the API says so
        "note": NO_OOD_CHECK,
    }

    study = api.get(f"/api/v1/studies/{ood_study['id']}/").json()
    assert study["result"]["unreliable"] is True and study["result"]["needs_attention"] is True
    other = api.get(f"/api/v1/studies/{xray_study['id']}/").json()
    assert other["result"]["unreliable"] is False and other["result"]["needs_attention"] is False

    page = rad_client.get(f"/studies/{ood_study['id']}/").content.decode()
    assert "Unlike the training data — result unreliable" in page
    assert "nearly uniform" in page
    # Every class counts as normal here, so the untrained model's top class is a normal one:
    # it is never shown as such.
    assert study["result"]["label"] in CLASSES
    assert study["result"]["shown_label"] == UNRELIABLE_LABEL
    assert other["result"]["shown_label"] == other["result"]["label"]
    assert Study.objects.get(pk=ood_study["id"]).result_label == UNRELIABLE_LABEL
    assert f"<strong data-study-label>{UNRELIABLE_LABEL}</strong>" in page


def test_a_colour_photograph_is_flagged_although_the_model_reads_a_grey_copy(
    api_token, production_model, celery_worker
):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    rng = np.random.default_rng(1)
    xray = np.asarray(imagegen.make_xray(320, 320).convert("L"), dtype=np.float64)
    tint = np.stack([xray, xray * 0.5 + 60 * rng.random(xray.shape), 255 - xray], axis=-1)
    photo = PILImage.fromarray(tint.clip(0, 255).astype(np.uint8), "RGB")
    grey_in_rgb = imagegen.make_xray(320, 320).convert("RGB")  # a radiograph saved as RGB

    colour = _done(
        api, _upload(api, imagegen.png_bytes(photo), "p.png", "OODC-1")["predictions"][0]["url"]
    )
    grey = _done(
        api,
        _upload(api, imagegen.png_bytes(grey_in_rgb), "g.png", "OODC-2")["predictions"][0]["url"],
    )

    assert colour["ood"]["flagged"] is True
    assert colour["ood"]["reasons"][0] == "a colour photograph, not a radiograph"
    assert grey["ood"]["flagged"] is False
