"""GET /api/v1/predictions/status/: many predictions' state in one query (issue #24 item 3)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from cxrweb.audit.models import AuditEvent
from tests.diagnosis.conftest import fail_prediction, finish_prediction, upload_view

pytestmark = pytest.mark.django_db
URL = "/api/v1/predictions/status/"


@pytest.fixture
def api(api_token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    return client


def test_it_reports_status_and_server_times_without_results(api, radiologist, pneumonia_model):
    uploads = [upload_view(radiologist, f"MRN-{i}", f"ACC-{i}", seed=i) for i in range(3)]
    done = finish_prediction(
        uploads[0].prediction, pneumonia_model, {"NORMAL": 0.9, "PNEUMONIA": 0.1}
    )
    fail_prediction(uploads[1].prediction, pneumonia_model)
    ids = [u.prediction.pk for u in uploads]
    events = AuditEvent.objects.count()

    with CaptureQueriesContext(connection) as queries:
        body = api.get(URL, {"ids": ",".join(map(str, [*ids, 999999]))}).json()

    assert [p["id"] for p in body["predictions"]] == sorted(ids)
    by_id = {p["id"]: p for p in body["predictions"]}
    assert by_id[done.pk]["status"] == "done" and by_id[done.pk]["finished_at"]
    assert by_id[ids[2]]["status"] == "queued" and by_id[ids[2]]["finished_at"] is None
    assert body["counts"] == {"queued": 1, "running": 0, "done": 1, "failed": 1}
    assert body["missing"] == [999999]
    assert not any("label" in p or "probabilities" in p for p in body["predictions"])
    # One query for the rows (plus the token's and the role's), and no audit event: no patient data.
    assert sum("diagnosis_prediction" in q["sql"] for q in queries.captured_queries) == 1
    assert AuditEvent.objects.count() == events


@pytest.mark.parametrize(
    ("ids", "message"),
    [("", "Give the predictions"), ("1,x", "separated by commas"), (",".join(["1"] * 2), None)],
)
def test_bad_id_lists_get_a_json_error(api, ids, message):
    response = api.get(URL, {"ids": ids})
    if message is None:
        assert response.status_code == 200
    else:
        assert response.status_code == 400 and message in response.json()["error"]


def test_too_many_ids_are_refused(api):
    response = api.get(URL, {"ids": ",".join(str(i) for i in range(1, 1002))})
    assert response.status_code == 400 and "At most 1000" in response.json()["error"]


def test_it_needs_a_clinical_user(client):
    assert client.get(URL, {"ids": "1"}).status_code in (401, 403)
