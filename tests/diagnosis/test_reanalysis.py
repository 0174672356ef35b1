"""Re-analysis (issue #22 item 5): after a promotion or a roll back, open studies are read again
by the new version behind live uploads; a study page re-reads one study. History is kept."""

from __future__ import annotations

import pytest
import redis
from django.urls import reverse
from rest_framework.test import APIClient

from cxrweb.audit.models import AuditEvent
from diagnosis import results, selectors
from diagnosis.models import Prediction, Reading, Study
from diagnosis.services import REANALYSIS_PRIORITY
from tests.conftest import TEST_BROKER_URL
from tests.diagnosis.conftest import PNEUMONIA_CLASSES, THRESHOLDS
from tests.diagnosis.conftest import finish_prediction as _finish
from tests.diagnosis.conftest import upload_view as _image
from tests.training.views.conftest import make_dataset, make_evaluation
from training.models import ModelVersion
from training.services import model_version_promote

SEP = "\x06\x16"  # kombu's Redis key for a priority step: f"{queue}{SEP}{step}"


@pytest.fixture
def broker(_broker):
    client = redis.Redis.from_url(TEST_BROKER_URL)
    client.flushdb()
    return client


@pytest.fixture
def versions(pneumonia_model) -> tuple[ModelVersion, ModelVersion]:
    model_version_promote(override_reason="test weights", version=pneumonia_model, reason="first")
    v2 = ModelVersion.objects.create(
        name="pneu-v2",
        architecture="mobilenet_v2",
        class_labels=PNEUMONIA_CLASSES,
        thresholds=THRESHOLDS,
        weights="models/pneu-v2.pt",
        sha256="1" * 64,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
    )
    return ModelVersion.objects.get(pk=pneumonia_model.pk), v2


@pytest.fixture
def studies(radiologist, versions) -> dict:
    """Two open studies (one of two views) and a signed one, all read by pneu-v1."""
    v1 = versions[0]
    open_a = _image(radiologist, "RE-1", "ACC-RE-1", seed=31)
    open_a2 = _image(radiologist, "RE-1", "ACC-RE-1", seed=32)
    open_b = _image(radiologist, "RE-2", "ACC-RE-2", seed=33)
    signed = _image(radiologist, "RE-3", "ACC-RE-3", seed=34)
    for upload, p in ((open_a, 0.7), (open_a2, 0.1), (open_b, 0.2), (signed, 0.8)):
        _finish(upload.prediction, v1, {"NORMAL": 1 - p, "PNEUMONIA": p})
    Reading.objects.create(
        study=signed.study,
        radiologist=radiologist,
        final_label="PNEUMONIA",
        agrees_with_model=True,
        prediction_ids=[signed.prediction.pk],
    )
    return {
        "open": [open_a.study.pk, open_b.study.pk],
        "signed": signed.study.pk,
        "open_images": {open_a.image.pk, open_a2.image.pk, open_b.image.pk},
        "signed_prediction": signed.prediction.pk,
    }


def _queued(broker, priority: int) -> list[bytes]:
    key = "inference" if priority == 0 else f"inference{SEP}{priority}"
    return broker.lrange(key, 0, -1)


def test_promoting_with_rerun_queues_exactly_the_unsigned_studies_behind_uploads(
    client, admin_user, versions, studies, broker, django_capture_on_commit_callbacks
):
    v1, v2 = versions
    client.force_login(admin_user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("training:version-promote", args=[v2.pk]),
            {"reason": "better", "rerun_open": "on", "override_reason": "test weights"},
        )
    assert response.status_code == 302
    rerun = Prediction.objects.filter(model_version=v2)
    assert {p.image_id for p in rerun} == studies["open_images"]
    assert all(p.status == "queued" for p in rerun)
    # The signed study is left as it was read; every earlier prediction is kept.
    assert not Prediction.objects.filter(
        image__study_id=studies["signed"], model_version=v2
    ).exists()
    assert Prediction.objects.filter(model_version=v1, status="done").count() == 4
    # Sent at the re-run priority (the lowest list), none at the uploads' priority.
    assert len(_queued(broker, REANALYSIS_PRIORITY)) == 3 and _queued(broker, 0) == []
    event = AuditEvent.objects.get(action="reanalyse")
    assert event.detail == {
        "scope": "open studies",
        "version": "pneu-v2",
        "studies": 2,
        "queued": 3,
        "unchanged": 0,
    }
    assert event.username == admin_user.username
    # The open studies wait for the new version: their flag follows the (pending) result.
    assert not Study.objects.get(pk=studies["open"][0]).flagged_by_model
    assert Study.objects.get(pk=studies["signed"]).flagged_by_model


def test_promoting_without_rerun_reads_only_new_studies(client, admin_user, versions, studies):
    client.force_login(admin_user)
    client.post(
        reverse("training:version-promote", args=[versions[1].pk]),
        {"reason": "better", "override_reason": "test weights"},
    )
    assert not Prediction.objects.filter(model_version=versions[1]).exists()
    assert not AuditEvent.objects.filter(action="reanalyse").exists()


def test_rolling_back_with_rerun_makes_the_earlier_version_current_again(
    versions, studies, admin_user
):
    v1, v2 = versions
    model_version_promote(
        override_reason="test weights", version=v2, promoted_by=admin_user, rerun_open=True
    )
    for p in Prediction.objects.filter(model_version=v2):
        _finish(p, v2, {"NORMAL": 0.9, "PNEUMONIA": 0.1})
    study = selectors.study_detail(studies["open"][0])
    assert selectors.study_result(study).model_version == "pneu-v2"

    back = model_version_promote(
        override_reason="test weights", version=v1, promoted_by=admin_user, rerun_open=True
    )
    assert back.reanalysis.queued == 3 and back.reanalysis.studies == 2
    for p in Prediction.objects.filter(model_version=v1, image__study_id__in=studies["open"]):
        assert p.status == "queued"  # v1's own earlier prediction, queued again
        _finish(p, v1, {"NORMAL": 0.3, "PNEUMONIA": 0.7})
    # Nothing new beside the one prediction per image and version; v2's stay as history.
    assert Prediction.objects.count() == 4 + 3
    study = selectors.study_detail(studies["open"][0])
    predictions = selectors.study_predictions(study)
    result = results.study_result(predictions)
    assert result.model_version == "pneu-v1" and result.label == "PNEUMONIA"
    notice = results.reanalysis_notice(predictions)
    assert notice.version == "pneu-v1" and notice.previous_version == "pneu-v2"
    assert notice.previous_label == "NORMAL"
    assert AuditEvent.objects.filter(action="reanalyse").count() == 2


def test_the_study_button_re_reads_with_production_and_the_page_says_it_changed(
    rad_client, radiologist, versions, studies
):
    v1, v2 = versions
    model_version_promote(override_reason="test weights", version=v2, reason="better")
    study_id = studies["open"][0]
    page = rad_client.get(f"/studies/{study_id}/").content.decode()
    assert "Re-analyse with the production version (pneu-v2)" in page
    shown = results.study_result(selectors.study_predictions(selectors.study_detail(study_id)))

    response = rad_client.post(f"/studies/{study_id}/reanalyse/")
    assert response.status_code == 302
    new = list(Prediction.objects.filter(image__study_id=study_id, model_version=v2))
    assert len(new) == 2
    assert Prediction.objects.filter(image__study_id=study_id, model_version=v1).count() == 2
    event = AuditEvent.objects.get(action="reanalyse")
    assert event.object_id == str(study_id) and event.patient_mrn == "RE-1"
    assert event.detail["scope"] == "study" and event.detail["queued"] == 2
    waiting = rad_client.get(f"/studies/{study_id}/").content.decode()
    assert "Re-analysis queued with version <strong>pneu-v2</strong>" in waiting
    for p in new:
        _finish(p, v2, {"NORMAL": 0.8, "PNEUMONIA": 0.2})

    page = rad_client.get(f"/studies/{study_id}/").content.decode()
    assert "Re-analysed with version <strong>pneu-v2</strong>" in page
    assert "previously: <strong>PNEUMONIA</strong> with version pneu-v1" in page
    assert "Re-analyse with the production version" not in page  # nothing left to re-read

    # A second click does nothing; the reading shown before the re-analysis is now stale.
    rad_client.post(f"/studies/{study_id}/reanalyse/")
    assert Prediction.objects.filter(image__study_id=study_id).count() == 4
    assert AuditEvent.objects.filter(action="reanalyse").order_by("pk").last().detail["queued"] == 0
    api = APIClient()
    api.force_authenticate(radiologist)
    stale = api.post(
        f"/api/v1/studies/{study_id}/readings/",
        {"agree": True, "prediction_ids": shown.prediction_ids},
        format="json",
    )
    assert stale.status_code == 409


def test_re_analysis_needs_a_clinical_role_and_post(
    client, outsider, rad_client, versions, studies
):
    study_id = studies["open"][0]
    assert rad_client.get(f"/studies/{study_id}/reanalyse/").status_code == 405
    client.force_login(outsider)
    assert client.post(f"/studies/{study_id}/reanalyse/").status_code == 403
    assert not AuditEvent.objects.filter(action="reanalyse").exists()


@pytest.mark.django_db(transaction=True)
def test_the_worker_runs_the_re_runs_of_a_promotion(
    radiologist, admin_user, production_model, state_dict_file, celery_worker
):
    """Real rows, the real broker and worker, a real (random-weights) model."""
    from tests.conftest import CLASSES, wait_for
    from training.services import model_version_import

    first = _image(radiologist, "RW-1", "ACC-RW-1", seed=41)
    wait_for(lambda: Prediction.objects.get(pk=first.prediction.pk).status == "done")
    v2 = model_version_import(
        path=state_dict_file("mobilenet_v2"),
        architecture="mobilenet_v2",
        classes=CLASSES,
        name="test-mobilenet-2",
    )
    model_version_promote(
        override_reason="test weights", version=v2, promoted_by=admin_user, rerun_open=True
    )
    rerun = Prediction.objects.get(image=first.image, model_version=v2)
    wait_for(lambda: Prediction.objects.get(pk=rerun.pk).status == "done")
    assert Prediction.objects.get(pk=first.prediction.pk).status == "done"  # kept as history
    predictions = selectors.study_predictions(selectors.study_detail(first.study.pk))
    assert results.study_result(predictions).prediction_ids == [rerun.pk]
    assert results.reanalysis_notice(predictions).previous_version == "test-mobilenet"


def test_the_admin_action_promotes_and_re_runs_open_studies(client, admin_user, versions, studies):
    # The admin action has no override field: the version is evaluated on other data.
    make_evaluation(versions[1], make_dataset("external-set", root="/data/external-set"))
    client.force_login(admin_user)
    response = client.post(
        "/admin/training/modelversion/",
        {"action": "promote_and_rerun_open", "_selected_action": [versions[1].pk]},
    )
    assert response.status_code == 302
    assert Prediction.objects.filter(model_version=versions[1]).count() == 3
    assert ModelVersion.objects.get(pk=versions[1].pk).is_production
    assert AuditEvent.objects.get(action="reanalyse").detail["studies"] == 2
