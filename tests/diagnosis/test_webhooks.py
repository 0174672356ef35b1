"""Critical-finding webhooks: which results are announced, the signed POST to a real HTTP
receiver, retries and failures, idempotency, the reconciler and the admin's Resend."""

from __future__ import annotations

import datetime as dt
import json
import socket

import pytest
from django.utils import timezone

from cxrweb.audit.models import AuditEvent
from diagnosis import dispatch, services
from diagnosis.models import Prediction, Study, WebhookDelivery
from diagnosis.worker.webhooks import backoff_s, webhook_deliver
from tests.diagnosis.conftest import finish_prediction, upload_view
from tests.diagnosis.webhook_receiver import Receiver, serve, signature_is_valid
from training.models import ModelVersion

SECRET = "test-webhook-secret-0123456789"
STAT, ROUTINE = Study.Priority.STAT, Study.Priority.ROUTINE


@pytest.fixture
def receiver():
    yield from serve(Receiver())


@pytest.fixture
def webhooks_on(settings, receiver):
    settings.CXR_WEBHOOK_URL = receiver.url
    settings.CXR_WEBHOOK_SECRET = SECRET
    settings.CXR_WEBHOOK_ON = "stat-flagged"
    settings.CXR_WEBHOOK_TIMEOUT_S = 2.0
    settings.CXR_WEBHOOK_MAX_ATTEMPTS = 3
    settings.CXR_WEBHOOK_BACKOFF_S = 0.0
    settings.CXR_PUBLIC_URL = "https://cxr.example.org"
    return receiver


def _study(user, version, *, priority=STAT, pneumonia=0.9, accession="ACC-W1", seed=1):
    result = upload_view(
        user, "MRN-W1", accession, seed, priority=priority, patient_name="Doe^Jane"
    )
    finish_prediction(result.prediction, version, {"NORMAL": 1 - pneumonia, "PNEUMONIA": pneumonia})
    return result.study


def test_a_flagged_stat_study_is_posted_signed_with_minimal_phi(
    webhooks_on, radiologist, pneumonia_model, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        study = _study(radiologist, pneumonia_model)
    [delivery] = WebhookDelivery.objects.all()
    assert (delivery.study, delivery.status, delivery.attempts) == (study, "pending", 0)
    assert [(t.name, t.args) for t in sent_tasks if t.name == dispatch.DELIVER_WEBHOOK] == [
        (dispatch.DELIVER_WEBHOOK, (delivery.pk,))
    ]

    assert webhook_deliver(delivery_id=delivery.pk).outcome == "delivered"

    [got] = webhooks_on.requests
    assert signature_is_valid(got, SECRET)
    assert not signature_is_valid(got, "another-secret-0123456789")
    assert got.headers["x-cxr-event"] == "study.flagged"
    assert got.headers["x-cxr-delivery"] == str(delivery.pk)
    assert got.headers["content-type"] == "application/json"
    body = json.loads(got.body)
    assert body["study"]["accession_number"] == "ACC-W1"
    assert body["study"]["priority"] == "STAT"
    assert body["study"]["url"] == f"https://cxr.example.org/studies/{study.pk}/"
    assert body["result"]["flagged_classes"] == [
        {"class": "PNEUMONIA", "probability": 0.9, "threshold": 0.292}
    ]
    assert body["result"]["model_version"] == "pneu-v1"
    assert body["result"]["prediction_ids"] == delivery.prediction_ids
    for phi in (b"Doe", b"Jane", b"MRN-W1"):
        assert phi not in got.body  # no name, no record number
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert delivery.delivered_at is not None
    event = AuditEvent.objects.get(action=AuditEvent.Action.WEBHOOK_SENT)
    assert event.patient_mrn == "MRN-W1" and event.detail["outcome"] == "delivered"


@pytest.mark.parametrize(
    ("on", "priority", "pneumonia", "sent"),
    [
        ("stat-flagged", STAT, 0.9, True),
        ("stat-flagged", ROUTINE, 0.9, False),
        ("stat-flagged", Study.Priority.URGENT, 0.9, False),
        ("stat-flagged", STAT, 0.1, False),  # STAT but not flagged
        ("flagged", ROUTINE, 0.9, True),
        ("flagged", STAT, 0.9, True),
        ("flagged", ROUTINE, 0.1, False),
    ],
)
def test_which_studies_are_announced(
    webhooks_on, settings, radiologist, pneumonia_model, on, priority, pneumonia, sent
):
    settings.CXR_WEBHOOK_ON = on
    _study(radiologist, pneumonia_model, priority=priority, pneumonia=pneumonia)
    assert WebhookDelivery.objects.exists() is sent


def test_nothing_is_recorded_while_webhooks_are_off(settings, radiologist, pneumonia_model):
    settings.CXR_WEBHOOK_URL = ""
    _study(radiologist, pneumonia_model)
    assert not WebhookDelivery.objects.exists()


def test_a_study_is_announced_once_every_view_is_done(webhooks_on, radiologist, pneumonia_model):
    first = upload_view(radiologist, "MRN-W2", "ACC-W2", 1, priority=STAT)
    second = upload_view(radiologist, "MRN-W2", "ACC-W2", 2, priority=STAT)
    finish_prediction(first.prediction, pneumonia_model, {"NORMAL": 0.1, "PNEUMONIA": 0.9})
    assert not WebhookDelivery.objects.exists()  # the lateral is still queued
    finish_prediction(second.prediction, pneumonia_model, {"NORMAL": 0.8, "PNEUMONIA": 0.2})
    [delivery] = WebhookDelivery.objects.all()
    assert sorted(delivery.prediction_ids) == sorted([first.prediction.pk, second.prediction.pk])


def test_the_same_result_stored_again_sends_nothing_new(webhooks_on, radiologist, pneumonia_model):
    study = _study(radiologist, pneumonia_model)
    services.study_result_store(study_id=study.pk)
    services.study_result_store(study_id=study.pk)
    assert WebhookDelivery.objects.count() == 1


def test_a_reanalysis_that_flips_the_study_to_flagged_is_announced(
    webhooks_on, radiologist, pneumonia_model
):
    study = _study(radiologist, pneumonia_model, pneumonia=0.1)
    assert not WebhookDelivery.objects.exists()
    v2 = ModelVersion.objects.create(
        name="pneu-v2",
        architecture="mobilenet_v2",
        class_labels=["NORMAL", "PNEUMONIA"],
        thresholds={"NORMAL": 0.5, "PNEUMONIA": 0.292},
        weights="models/pneu-v2.pt",
        sha256="1" * 64,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
    )
    services.study_reanalyse(study=study, version=v2)
    [rerun] = Prediction.objects.filter(model_version=v2)
    assert not WebhookDelivery.objects.exists()  # queued: the study is not done yet
    finish_prediction(rerun, v2, {"NORMAL": 0.3, "PNEUMONIA": 0.7})
    [delivery] = WebhookDelivery.objects.all()
    assert delivery.prediction_ids == [rerun.pk]
    assert delivery.payload["result"]["model_version"] == "pneu-v2"


def test_a_pending_delivery_is_not_sent_once_webhooks_are_turned_off(
    webhooks_on, settings, radiologist, pneumonia_model
):
    _study(radiologist, pneumonia_model)
    settings.CXR_WEBHOOK_URL, settings.CXR_WEBHOOK_SECRET = "", ""
    delivery = WebhookDelivery.objects.get()
    assert webhook_deliver(delivery_id=delivery.pk).outcome == "failed"
    delivery.refresh_from_db()
    assert delivery.status == "failed" and "turned off" in delivery.last_error
    assert webhooks_on.requests == []
    with pytest.raises(services.WebhookResendRefused, match="set CXR_WEBHOOK_URL"):
        services.webhook_delivery_resend(delivery=delivery)


def test_a_duplicate_message_sends_nothing(webhooks_on, radiologist, pneumonia_model):
    _study(radiologist, pneumonia_model)
    delivery = WebhookDelivery.objects.get()
    assert webhook_deliver(delivery_id=delivery.pk).outcome == "delivered"
    assert webhook_deliver(delivery_id=delivery.pk).outcome == "skipped"
    assert len(webhooks_on.requests) == 1


def test_a_copy_that_arrives_while_an_attempt_runs_is_skipped(
    webhooks_on, radiologist, pneumonia_model
):
    _study(radiologist, pneumonia_model)
    delivery = WebhookDelivery.objects.get()
    lease = timezone.now() + dt.timedelta(seconds=60)  # as a running attempt's claim leaves it
    WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=1, next_attempt_at=lease)
    assert webhook_deliver(delivery_id=delivery.pk).outcome == "skipped"
    assert webhooks_on.requests == []


def test_500_twice_then_200_is_delivered_on_the_third_attempt(
    webhooks_on, radiologist, pneumonia_model
):
    webhooks_on.statuses = [500, 503, 200]
    _study(radiologist, pneumonia_model)
    delivery = WebhookDelivery.objects.get()
    outcomes = [webhook_deliver(delivery_id=delivery.pk).outcome for _ in range(3)]
    assert outcomes == ["retry", "retry", "delivered"]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 3, 200)
    assert len(webhooks_on.requests) == 3
    assert len({r.headers["x-cxr-delivery"] for r in webhooks_on.requests}) == 1
    assert len({r.body for r in webhooks_on.requests}) == 1  # the same body every time


def test_a_receiver_that_keeps_failing_is_given_up_after_the_attempts(
    webhooks_on, radiologist, pneumonia_model
):
    webhooks_on.statuses = [502]
    _study(radiologist, pneumonia_model)
    delivery = WebhookDelivery.objects.get()
    outcomes = [webhook_deliver(delivery_id=delivery.pk).outcome for _ in range(4)]
    assert outcomes == ["retry", "retry", "failed", "skipped"]
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 3
    assert delivery.last_error.startswith("Gave up after 3 attempts: HTTP 502")
    event = AuditEvent.objects.get(action=AuditEvent.Action.WEBHOOK_SENT)
    assert event.detail["outcome"] == "failed"


@pytest.mark.parametrize("status", [400, 401, 404, 410, 302])
def test_a_4xx_or_a_redirect_fails_at_once_with_the_reason(
    webhooks_on, radiologist, pneumonia_model, status
):
    webhooks_on.statuses = [status]
    _study(radiologist, pneumonia_model)
    delivery = WebhookDelivery.objects.get()
    assert webhook_deliver(delivery_id=delivery.pk).outcome == "failed"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 1, status)
    assert delivery.last_error.startswith(f"HTTP {status}")
    assert len(webhooks_on.requests) == 1  # a redirect is not followed


@pytest.mark.parametrize("status", [408, 429])
def test_408_and_429_are_tried_again(webhooks_on, radiologist, pneumonia_model, status):
    webhooks_on.statuses = [status, 200]
    _study(radiologist, pneumonia_model)
    delivery = WebhookDelivery.objects.get()
    assert webhook_deliver(delivery_id=delivery.pk).outcome == "retry"
    assert webhook_deliver(delivery_id=delivery.pk).outcome == "delivered"


def test_retry_after_is_honoured_within_the_limit(
    webhooks_on, settings, radiologist, pneumonia_model
):
    settings.CXR_WEBHOOK_BACKOFF_S = 1.0
    settings.CXR_WEBHOOK_BACKOFF_MAX_S = 60.0
    webhooks_on.statuses = [429]
    webhooks_on.headers = {"Retry-After": "30"}
    _study(radiologist, pneumonia_model)
    delivery = WebhookDelivery.objects.get()
    attempt = webhook_deliver(delivery_id=delivery.pk)
    assert (attempt.outcome, attempt.retry_in) == ("retry", 30.0)
    delivery.refresh_from_db()
    assert delivery.next_attempt_at > timezone.now() + dt.timedelta(seconds=25)
    # Not due yet: an early message sends nothing.
    assert webhook_deliver(delivery_id=delivery.pk).outcome == "skipped"


def test_the_back_off_doubles_up_to_its_limit(settings):
    settings.CXR_WEBHOOK_BACKOFF_S = 30.0
    settings.CXR_WEBHOOK_BACKOFF_MAX_S = 200.0
    assert [backoff_s(n) for n in (1, 2, 3, 4, 5)] == [30.0, 60.0, 120.0, 200.0, 200.0]
    assert backoff_s(1, retry_after=90) == 90.0
    assert backoff_s(1, retry_after=9000) == 200.0


def test_a_refused_connection_is_tried_again(webhooks_on, settings, radiologist, pneumonia_model):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.CXR_WEBHOOK_URL = f"http://127.0.0.1:{port}/hook"
    _study(radiologist, pneumonia_model)
    delivery = WebhookDelivery.objects.get()
    assert webhook_deliver(delivery_id=delivery.pk).outcome == "retry"
    delivery.refresh_from_db()
    assert delivery.last_status_code is None
    assert "refused" in delivery.last_error.lower()


def test_a_receiver_that_does_not_answer_in_time_is_tried_again(
    webhooks_on, settings, radiologist, pneumonia_model
):
    settings.CXR_WEBHOOK_TIMEOUT_S = 0.3
    webhooks_on.delay_s = 1.5
    _study(radiologist, pneumonia_model)
    delivery = WebhookDelivery.objects.get()
    assert webhook_deliver(delivery_id=delivery.pk).outcome == "retry"
    delivery.refresh_from_db()
    assert "timed out" in delivery.last_error.lower()


def test_the_reconciler_sends_again_a_delivery_whose_message_was_lost(
    webhooks_on, settings, radiologist, pneumonia_model, sent_tasks
):
    settings.CXR_RECONCILE_QUEUED_AFTER_S = 60
    _study(radiologist, pneumonia_model)
    delivery = WebhookDelivery.objects.get()
    assert dispatch.webhooks_reconcile() == 0  # just created: its message may still come
    long_ago = timezone.now() - dt.timedelta(seconds=120)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=long_ago)
    assert dispatch.webhooks_reconcile() == 1
    assert dispatch.webhooks_reconcile() == 0  # due again now, not lost twice
    assert [t.args for t in sent_tasks if t.name == dispatch.DELIVER_WEBHOOK] == [(delivery.pk,)]
    assert webhook_deliver(delivery_id=delivery.pk).outcome == "delivered"


def test_the_admin_resends_a_failed_delivery_and_it_is_audited(
    webhooks_on,
    client,
    admin_user,
    radiologist,
    pneumonia_model,
    sent_tasks,
    django_capture_on_commit_callbacks,
):
    webhooks_on.statuses = [404, 200]
    _study(radiologist, pneumonia_model)
    delivery = WebhookDelivery.objects.get()
    webhook_deliver(delivery_id=delivery.pk)
    client.force_login(admin_user)
    url = "/admin/diagnosis/webhookdelivery/"
    page = client.get(url)
    assert page.status_code == 200
    assert b"ACC-W1" in page.content and b"HTTP 404" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        resp = client.post(
            url, {"action": "resend", "_selected_action": [delivery.pk]}, follow=True
        )
    assert b"1 delivery(ies) queued again" in resp.content
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    assert [t.args for t in sent_tasks if t.name == dispatch.DELIVER_WEBHOOK] == [(delivery.pk,)]
    event = AuditEvent.objects.get(action=AuditEvent.Action.WEBHOOK_RESENT)
    assert event.username == admin_user.username and event.patient_mrn == "MRN-W1"
    assert webhook_deliver(delivery_id=delivery.pk).outcome == "delivered"


def test_a_delivery_being_sent_cannot_be_resent(webhooks_on, radiologist, pneumonia_model):
    _study(radiologist, pneumonia_model)
    delivery = WebhookDelivery.objects.get()
    with pytest.raises(services.WebhookResendRefused, match="still being sent"):
        services.webhook_delivery_resend(delivery=delivery)


def test_a_radiologist_cannot_see_the_delivery_log(webhooks_on, client, radiologist):
    client.force_login(radiologist)
    resp = client.get("/admin/diagnosis/webhookdelivery/")
    assert resp.status_code in (302, 403)
