"""A model version without an out-of-distribution reference: its predictions carry only the image
checks, so no warning does not mean an image passed a check. The study page, the report and its
PDF, the API and the version's page say so plainly."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
from rest_framework.test import APIClient

from diagnosis import results
from diagnosis.results import NO_OOD_CHECK
from diagnosis.worker.finish import ood_fields
from tests.diagnosis.conftest import finish_prediction as _finish
from tests.diagnosis.conftest import upload_view as _image

IN_DISTRIBUTION = {"score": 3.5, "threshold": 18.0, "flagged": False, "reasons": []}
PHOTO_WITHOUT_REFERENCE = {
    "score": None,
    "threshold": None,
    "flagged": True,
    "reasons": ["a colour photograph, not a radiograph"],
}
NORMAL = {"NORMAL": 0.9, "PNEUMONIA": 0.1}
SAID = "has no out-of-distribution check: images unlike its training data are not flagged"


class _Version:
    class_labels = ["NORMAL", "PNEUMONIA"]

    def __init__(self, name: str) -> None:
        self.name = name

    def is_normal_label(self, label: str) -> bool:
        return label == "NORMAL"

    def threshold_for(self, label: str) -> float:
        return 0.5


def _p(pk, image_id, version, ood=None):
    return SimpleNamespace(
        pk=pk,
        image_id=image_id,
        status="done",
        probabilities=NORMAL,
        label="NORMAL",
        queued_at=pk,
        model_version=version,
        **ood_fields(ood),
    )


def test_the_rule_names_the_versions_without_a_reference():
    checked, unchecked = _Version("with-ref"), _Version("no-ref")
    result = results.study_result([_p(1, 1, checked, IN_DISTRIBUTION), _p(2, 2, unchecked)])
    assert result.unchecked_versions == ["no-ref"]
    assert result.as_dict()["ood"] == {
        "checked": False,
        "unchecked_versions": ["no-ref"],
        "note": NO_OOD_CHECK,
    }
    # An image check that flagged (a colour photo) is still no reference check.
    photo = results.study_result([_p(3, 1, unchecked, PHOTO_WITHOUT_REFERENCE)])
    assert photo.unreliable and photo.unchecked_versions == ["no-ref"]
    fine = results.study_result([_p(4, 1, checked, IN_DISTRIBUTION)])
    assert fine.unchecked_versions == []
    assert fine.as_dict()["ood"] == {"checked": True, "unchecked_versions": [], "note": None}


@pytest.fixture
def unchecked(radiologist, pneumonia_model):
    """A study read by a version with no OOD reference (pneumonia_model has none)."""
    assert not pneumonia_model.ood_reference
    upload = _image(radiologist, "NO-1", "ACC-NO-1", seed=91)
    _finish(upload.prediction, pneumonia_model, NORMAL)
    return upload


def test_the_study_page_says_there_is_no_ood_check(unchecked, rad_client):
    page = rad_client.get(f"/studies/{unchecked.study.pk}/").content.decode()
    assert "data-no-ood-check" in page
    assert f"This model version (pneu-v1) {SAID}" in page
    assert "An admin can fit one with <code>manage.py calibrate</code>." in page
    assert "Not checked for images unlike the training data: version pneu-v1" in page
    assert "Like the training data" not in page


def test_a_checked_result_says_nothing_of_the_kind(radiologist, pneumonia_model, rad_client):
    upload = _image(radiologist, "NO-2", "ACC-NO-2", seed=92)
    _finish(upload.prediction, pneumonia_model, NORMAL, ood=IN_DISTRIBUTION)
    page = rad_client.get(f"/studies/{upload.study.pk}/").content.decode()
    assert "data-no-ood-check" not in page and SAID not in page
    assert "Like the training data: score 3.5" in page
    pdf = _pdf_text(rad_client, upload.study.pk)
    assert SAID not in pdf


def _pdf_text(client, pk: int) -> str:
    from pypdf import PdfReader

    pdf = client.get(f"/studies/{pk}/report.pdf").content
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return re.sub(r"\s+", " ", text)


def test_the_report_and_pdf_say_there_is_no_ood_check(unchecked, rad_client):
    html = rad_client.get(f"/studies/{unchecked.study.pk}/report/").content.decode()
    assert f"This model version (pneu-v1) {SAID}" in html
    text = _pdf_text(rad_client, unchecked.study.pk)
    assert "Not checked for images unlike the training data (version pneu-v1)." in text
    assert f"This model version {SAID}. An admin can fit one with manage.py calibrate." in text


def test_the_api_says_there_is_no_ood_check(unchecked, api_token):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    body = api.get(f"/api/v1/studies/{unchecked.study.pk}/").json()
    assert body["result"]["ood"] == {
        "checked": False,
        "unchecked_versions": ["pneu-v1"],
        "note": NO_OOD_CHECK,
    }
    (prediction,) = body["predictions"]
    assert prediction["ood"]["checked"] is False and prediction["ood"]["note"] == NO_OOD_CHECK
    assert prediction["ood"]["score"] is None and prediction["ood"]["flagged"] is False
    assert "manage.py calibrate" in NO_OOD_CHECK


def test_the_api_says_checked_for_a_scored_prediction_and_nothing_before_it_finishes(
    radiologist, pneumonia_model, api_token
):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    queued = _image(radiologist, "NO-3", "ACC-NO-3", seed=93)
    body = api.get(f"/api/v1/predictions/{queued.prediction.pk}/").json()
    assert body["ood"]["checked"] is None and body["ood"]["note"] is None
    _finish(queued.prediction, pneumonia_model, NORMAL, ood=IN_DISTRIBUTION)
    body = api.get(f"/api/v1/studies/{queued.study.pk}/").json()
    assert body["predictions"][0]["ood"]["checked"] is True
    assert body["result"]["ood"]["checked"] is True and body["result"]["ood"]["note"] is None


def test_the_schema_documents_the_check(rad_client):
    parts = rad_client.get("/api/v1/schema/?format=json").json()["components"]["schemas"]
    assert {"checked", "note"} <= set(parts["OOD"]["properties"])
    result = parts["StudyResult"]["properties"]["ood"]["$ref"].rsplit("/", 1)[1]
    assert set(parts[result]["properties"]) == {"checked", "unchecked_versions", "note"}


def test_the_version_page_says_whether_it_has_an_ood_check(pneumonia_model, client, admin_user):
    client.force_login(admin_user)
    page = client.get(f"/training/models/{pneumonia_model.pk}/").content.decode()
    assert "Out-of-distribution check" in page
    assert f"This model version (pneu-v1) {SAID}" in page
    pneumonia_model.ood_reference.name = "models/ood/pneu-v1.npz"
    pneumonia_model.ood_summary = {"method": "mahalanobis", "threshold": 18.25, "n_train": 400}
    pneumonia_model.save()
    page = client.get(f"/training/models/{pneumonia_model.pk}/").content.decode()
    assert SAID not in page
    assert "mahalanobis, threshold" in page and "18.25" in page and "400 training" in page
