"""The model version pages (training/views/versions.py): evaluate, promote, roll back, export."""

from __future__ import annotations

import hashlib

import pytest

from cxrweb.audit.models import AuditEvent
from tests.training.views.conftest import second_version, sent_ids
from training.dispatch import RUN_EVALUATION
from training.models import Evaluation, ModelPromotion, ModelVersion

pytestmark = pytest.mark.django_db


def test_a_version_page_shows_its_metadata_evaluations_and_history(admin_client, world):
    v = world["version"]
    html = admin_client.get(f"/training/models/{v.pk}/").content.decode()
    for text in (
        v.sha256,
        "224 px",
        "0.485",
        f'href="/training/runs/{world["runs"]["done"].pk}/"',
        "Promote to production",
        "Evaluate on a dataset",
        "Export checkpoint",
        world["evaluations"]["failed"].error,
        "Promotion history",
    ):
        assert text in html, text
    assert f'data-poll-url="/training/models/{v.pk}/evaluations/" data-poll-ms=' in html


def test_the_evaluate_form_queues_an_evaluation(
    admin_client, admin_user, model_version, dataset, sent_tasks, django_capture_on_commit_callbacks
):
    queued = sent_ids(sent_tasks, RUN_EVALUATION)
    with django_capture_on_commit_callbacks(execute=True):
        resp = admin_client.post(
            f"/training/models/{model_version.pk}/evaluate/",
            {"dataset": dataset.pk, "split": "val"},
        )
    evaluation = Evaluation.objects.get()
    assert resp.status_code == 302
    assert (evaluation.split, evaluation.status, evaluation.created_by) == (
        "val",
        "queued",
        admin_user,
    )
    assert queued() == [evaluation.pk]


def test_the_evaluate_form_refuses_an_unknown_split(admin_client, model_version, dataset):
    resp = admin_client.post(
        f"/training/models/{model_version.pk}/evaluate/",
        {"dataset": dataset.pk, "split": "everything"},
    )
    assert resp.status_code == 400 and "Select a valid choice" in resp.content.decode()
    assert not Evaluation.objects.exists()


def test_promotion_requires_a_reason(admin_client, model_version):
    resp = admin_client.post(f"/training/models/{model_version.pk}/promote/", {"reason": "  "})
    assert resp.status_code == 400
    assert "Give a reason" in resp.content.decode()
    model_version.refresh_from_db()
    assert model_version.status == ModelVersion.Status.CANDIDATE
    assert not ModelPromotion.objects.exists()


def test_promotion_records_who_and_why(admin_client, admin_user, model_version):
    resp = admin_client.post(
        f"/training/models/{model_version.pk}/promote/",
        {
            "reason": "Better sensitivity on the local test split.",
            "override_reason": "test weights",
        },
    )
    assert resp.status_code == 302 and resp["Location"] == f"/training/models/{model_version.pk}/"
    model_version.refresh_from_db()
    assert model_version.status == ModelVersion.Status.PRODUCTION
    promotion = ModelPromotion.objects.get()
    assert (promotion.promoted_by, promotion.reason) == (
        admin_user,
        "Better sensitivity on the local test split.",
    )
    html = admin_client.get(resp["Location"]).content.decode()
    assert "In production since" in html and "Promote to production" not in html
    event = AuditEvent.objects.get(action=AuditEvent.Action.PROMOTE)
    assert event.username == admin_user.username
    assert event.ip_address == "127.0.0.1" and event.path.endswith("/promote/")


def test_rolling_back_restores_an_earlier_version_as_the_only_production_one(
    admin_client, admin_user, production_model
):
    newer = second_version(production_model)
    admin_client.post(
        f"/training/models/{newer.pk}/promote/",
        {"reason": "new model", "override_reason": "test weights"},
    )
    production_model.refresh_from_db()
    assert production_model.status == ModelVersion.Status.RETIRED
    html = admin_client.get(f"/training/models/{production_model.pk}/").content.decode()
    assert "Roll back to this version" in html

    resp = admin_client.post(
        f"/training/models/{production_model.pk}/promote/",
        {"reason": "more false negatives with the new one", "override_reason": "test weights"},
    )
    assert resp.status_code == 302
    assert list(ModelVersion.objects.filter(status="production")) == [production_model]
    newer.refresh_from_db()
    assert newer.status == ModelVersion.Status.RETIRED
    last = ModelPromotion.objects.order_by("-created_at", "-pk").first()
    assert (last.model_version, last.previous_version, last.promoted_by) == (
        production_model,
        newer,
        admin_user,
    )


def test_promote_returns_to_a_safe_next_page_only(admin_client, model_version):
    resp = admin_client.post(
        f"/training/models/{model_version.pk}/promote/",
        {"reason": "ok", "next": "https://evil.example/", "override_reason": "test weights"},
    )
    assert resp["Location"] == f"/training/models/{model_version.pk}/"


def test_export_returns_the_checkpoint_with_its_sha256(admin_client, admin_user, model_version):
    resp = admin_client.get(f"/training/models/{model_version.pk}/checkpoint.pt")
    assert resp.status_code == 200
    body = b"".join(resp.streaming_content)
    assert hashlib.sha256(body).hexdigest() == model_version.sha256
    assert resp["X-Checkpoint-SHA256"] == model_version.sha256
    assert (
        f'filename="test-mobilenet-{model_version.sha256[:12]}.pt"' in resp["Content-Disposition"]
    )
    event = AuditEvent.objects.get(action=AuditEvent.Action.DOWNLOAD)
    assert (event.username, event.object_type, event.object_id) == (
        admin_user.username,
        "ModelVersion",
        str(model_version.pk),
    )


def test_the_versions_list_shows_status_metrics_and_promotion(admin_client, production_model):
    candidate = second_version(production_model, metrics={"accuracy": 0.9123, "macro_auc": 0.97})
    html = admin_client.get("/training/models/").content.decode()
    assert candidate.name in html and "0.912" in html and "0.970" in html
    assert "Production" in html and "Candidate" in html
    assert "test" in html  # the fixture's promotion reason
