"""POST /api/v1/studies/<id>/readings/: a reading signs exactly the result that was shown."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from cxrweb.apitokens.models import ApiToken
from cxrweb.audit.models import AuditEvent
from diagnosis.models import Reading
from tests.diagnosis.conftest import finish_prediction as _finish
from tests.diagnosis.conftest import upload_view as _image


@pytest.fixture
def api(api_token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    return client


@pytest.fixture
def shown(radiologist, pneumonia_model, api) -> dict:
    """A study of two views, both finished, as an API client reads it."""
    first = _image(radiologist, "RA-1", "ACC-RA-1", seed=51)
    second = _image(radiologist, "RA-1", "ACC-RA-1", seed=52)
    _finish(first.prediction, pneumonia_model, {"NORMAL": 0.59, "PNEUMONIA": 0.41})
    _finish(second.prediction, pneumonia_model, {"NORMAL": 0.35, "PNEUMONIA": 0.65})
    body = api.get(f"/api/v1/studies/{first.study.pk}/").json()
    return {
        "study": first.study,
        "result": body["result"],
        "url": f"/api/v1/studies/{first.study.pk}/readings/",
    }


def test_an_agreeing_reading_carries_the_shown_label(api, shown, radiologist):
    resp = api.post(
        shown["url"],
        {
            "agree": True,
            "label": "",
            "notes": "lower lobe",
            "prediction_ids": shown["result"]["prediction_ids"],
        },
        format="json",
    )
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["label"] == shown["result"]["label"] == "PNEUMONIA"
    assert body["agree"] is True and body["notes"] == "lower lobe"
    assert sorted(body["prediction_ids"]) == sorted(shown["result"]["prediction_ids"])
    reading = Reading.objects.get()
    assert reading.final_label == "PNEUMONIA" and reading.radiologist == radiologist
    event = AuditEvent.objects.get(action="reading")
    assert event.object_id == str(reading.pk) and event.patient_mrn == "RA-1"
    assert event.detail["prediction_ids"] == reading.prediction_ids


def test_agreeing_ignores_a_different_label_sent_with_it(api, shown):
    resp = api.post(
        shown["url"],
        {"agree": True, "label": "NORMAL", "prediction_ids": shown["result"]["prediction_ids"]},
        format="json",
    )
    assert resp.status_code == 201 and resp.json()["label"] == "PNEUMONIA"


def test_a_stale_set_of_prediction_ids_is_refused_and_nothing_is_stored(api, shown):
    stale = shown["result"]["prediction_ids"][:1]
    resp = api.post(shown["url"], {"agree": True, "prediction_ids": stale}, format="json")
    assert resp.status_code == 409
    body = resp.json()
    assert body["code"] == "stale_result" and "Review the current result" in body["error"]
    assert sorted(body["result"]["prediction_ids"]) == sorted(shown["result"]["prediction_ids"])
    assert not Reading.objects.exists()
    assert not AuditEvent.objects.filter(action="reading").exists()


def test_a_view_that_finishes_after_reading_makes_the_shown_ids_stale(
    api, radiologist, pneumonia_model
):
    first = _image(radiologist, "RA-2", "ACC-RA-2", seed=53)
    second = _image(radiologist, "RA-2", "ACC-RA-2", seed=54)
    _finish(first.prediction, pneumonia_model, {"NORMAL": 0.9, "PNEUMONIA": 0.1})
    seen = api.get(f"/api/v1/studies/{first.study.pk}/").json()["result"]
    assert seen["status"] == "pending" and seen["label"] == "NORMAL"
    _finish(second.prediction, pneumonia_model, {"NORMAL": 0.2, "PNEUMONIA": 0.8})
    url = f"/api/v1/studies/{first.study.pk}/readings/"
    resp = api.post(url, {"agree": True, "prediction_ids": seen["prediction_ids"]}, format="json")
    assert resp.status_code == 409 and not Reading.objects.exists()
    now = resp.json()["result"]
    resp = api.post(url, {"agree": True, "prediction_ids": now["prediction_ids"]}, format="json")
    assert resp.status_code == 201 and resp.json()["label"] == "PNEUMONIA"


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"prediction_ids": []}, "agree"),
        ({"agree": "yes", "prediction_ids": []}, "agree"),
        ({"agree": True}, "prediction_ids"),
        ({"agree": True, "prediction_ids": ["1"]}, "prediction_ids"),
        ({"agree": False, "label": "", "prediction_ids": []}, "label"),
    ],
)
def test_malformed_readings_are_refused(api, shown, payload, field):
    resp = api.post(shown["url"], payload, format="json")
    assert resp.status_code == 400 and resp.json()["field"] == field
    assert not Reading.objects.exists()


def test_an_override_follows_the_pages_rules(api, shown):
    ids = shown["result"]["prediction_ids"]
    bad = api.post(
        shown["url"],
        {"agree": False, "label": "tuberculosis", "prediction_ids": ids},
        format="json",
    )
    assert bad.status_code == 400 and "Unknown label" in bad.json()["error"]
    first = api.post(
        shown["url"], {"agree": False, "label": "NORMAL", "prediction_ids": ids}, format="json"
    )
    assert first.status_code == 201 and first.json()["agree"] is False
    again = api.post(shown["url"], {"agree": True, "prediction_ids": ids}, format="json")
    assert again.status_code == 400 and "amend it" in again.json()["error"]
    amended = api.post(
        shown["url"],
        {"agree": True, "prediction_ids": ids, "amends": first.json()["id"]},
        format="json",
    )
    assert amended.status_code == 201 and amended.json()["amends"] == first.json()["id"]


def test_only_clinical_users_sign(shown, outsider):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.objects.create(user=outsider)[1]}")
    resp = client.post(
        shown["url"],
        {"agree": True, "prediction_ids": shown["result"]["prediction_ids"]},
        format="json",
    )
    assert resp.status_code == 403 and not Reading.objects.exists()
    anonymous = APIClient().post(shown["url"], {"agree": True, "prediction_ids": []}, format="json")
    assert anonymous.status_code in (401, 403)


def test_an_unknown_study_is_404(api, db):
    assert (
        api.post(
            "/api/v1/studies/999999/readings/", {"agree": True, "prediction_ids": []}, format="json"
        ).status_code
        == 404
    )
