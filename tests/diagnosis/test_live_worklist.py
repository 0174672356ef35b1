"""The live worklist (issue #22 item 4): a change token the open page polls, and the table it then
fetches. The token moves when a study is uploaded, a prediction starts, finishes, fails or is
queued again, or a reading is signed, and only then."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cxrweb.audit.models import AuditEvent
from diagnosis import services
from diagnosis.models import Prediction
from tests.diagnosis.conftest import fail_prediction, finish_prediction, upload_view

pytestmark = pytest.mark.django_db

CHANGES = "/worklist/changes/"


def _poll(client, since: str, **filters) -> dict:
    response = client.get(CHANGES, {"since": since, **filters})
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"]
    return response.json()


def _token(client) -> str:
    return _poll(client, "")["token"]


def test_the_token_moves_on_each_worklist_change_and_only_then(
    rad_client, radiologist, second_radiologist, pneumonia_model
):
    token = _token(rad_client)
    assert _poll(rad_client, token) == {"token": token, "changed": False, "new": 0}

    upload = upload_view(second_radiologist, "LIVE-1", "ACC-LIVE-1", seed=1)
    seen = _poll(rad_client, token)
    assert seen["changed"] and seen["new"] == 1
    token = seen["token"]
    assert _poll(rad_client, token)["changed"] is False

    # Reading the study (an audit event), the worklist, the rows: nothing on the worklist moved.
    assert rad_client.get(f"/studies/{upload.study.pk}/").status_code == 200
    assert rad_client.get("/worklist/rows/").status_code == 200
    assert AuditEvent.objects.exists()
    assert _poll(rad_client, token)["changed"] is False

    steps = {
        "promoted (waiting -> queued)": lambda p: Prediction.objects.filter(pk=p.pk).update(
            model_version=pneumonia_model
        ),
        "started": lambda p: Prediction.objects.filter(pk=p.pk).update(
            status="running", started_at=timezone.now()
        ),
        "failed": lambda p: fail_prediction(p, pneumonia_model),
        "queued again": lambda p: services.prediction_rerun(prediction=p),
        "finished": lambda p: finish_prediction(
            p, pneumonia_model, {"NORMAL": 0.2, "PNEUMONIA": 0.8}
        ),
        "signed": lambda p: services.reading_sign(
            study=upload.study, radiologist=radiologist, final_label="PNEUMONIA", agrees=True
        ),
    }
    for step, change in steps.items():
        change(Prediction.objects.get(pk=upload.prediction.pk))
        seen = _poll(rad_client, token)
        assert seen["changed"], step
        assert seen["new"] == 0, step
        token = seen["token"]
        assert _poll(rad_client, token)["changed"] is False, step


def test_new_counts_the_studies_uploaded_since_that_match_the_filters(
    rad_client, second_radiologist
):
    token = _token(rad_client)
    upload_view(second_radiologist, "LIVE-A", "ACC-LIVE-A", seed=2, priority=2)
    upload_view(second_radiologist, "LIVE-B", "ACC-LIVE-B", seed=3)
    assert _poll(rad_client, token)["new"] == 2
    assert _poll(rad_client, token, q="LIVE-A")["new"] == 1
    assert _poll(rad_client, token, q="nobody")["new"] == 0
    assert _poll(rad_client, "not-a-token")["new"] == 0


def test_a_poll_costs_the_same_few_queries_whatever_the_number_of_studies(
    rad_client, second_radiologist
):
    upload_view(second_radiologist, "LIVE-Q1", "ACC-LIVE-Q1", seed=4)
    token = _token(rad_client)
    with CaptureQueriesContext(connection) as one:
        _poll(rad_client, token)
    for n in range(5):
        upload_view(second_radiologist, f"LIVE-Q{n + 2}", f"ACC-LIVE-Q{n + 2}", seed=5 + n)
    token = _token(rad_client)
    with CaptureQueriesContext(connection) as six:
        _poll(rad_client, token)
    assert len(six) == len(one)
    token_sql = [q["sql"] for q in six if "diagnosis_" in q["sql"]]
    assert len(token_sql) == 2, token_sql  # the newest ids, and the pending predictions
    assert not any("diagnosis_auditevent" in sql for sql in token_sql)


def test_the_rows_are_the_worklist_table_of_the_same_filters_and_an_audited_view(
    rad_client, radiologist, second_radiologist
):
    a = upload_view(second_radiologist, "LIVE-R1", "ACC-LIVE-R1", seed=20)
    upload_view(second_radiologist, "LIVE-R2", "ACC-LIVE-R2", seed=21)
    html = rad_client.get("/worklist/rows/", {"q": "LIVE-R1"}).content.decode()
    assert html.lstrip().startswith("<table") and "<html" not in html
    assert f'data-study-id="{a.study.pk}"' in html and "LIVE-R2" not in html
    rad_client.get("/worklist/rows/", {"q": "LIVE-R1"})  # the same rows again: one event
    events = AuditEvent.objects.filter(detail__view="worklist-live")
    assert events.count() == 1
    assert events.get().detail["patients"] == ["LIVE-R1"]
    assert events.get().username == radiologist.username


def test_the_page_carries_the_token_and_the_urls_and_no_longer_reloads_itself(
    rad_client, second_radiologist
):
    upload_view(second_radiologist, "LIVE-P1", "ACC-LIVE-P1", seed=30)  # pending
    html = rad_client.get("/").content.decode()
    token = _token(rad_client)
    assert f'data-live-token="{token}"' in html
    assert 'data-live-changes-url="/worklist/changes/"' in html
    assert 'data-live-rows-url="/worklist/rows/"' in html
    assert "data-refresh=" not in html


def test_the_token_and_rows_are_for_clinical_users_only(client, outsider):
    assert client.get(CHANGES).status_code == 302
    client.force_login(outsider)
    assert client.get(CHANGES).status_code == 403
    assert client.get("/worklist/rows/").status_code == 403
