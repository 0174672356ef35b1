"""A flagged STAT upload, through the real broker and worker, ends as a signed POST at a real
HTTP receiver: the inference task stores the flagged result, which queues the delivery task on
the maintenance queue; the receiver's first answer is a 500, so Celery tries again."""

from __future__ import annotations

import json

import pytest

from diagnosis import services
from diagnosis.models import Study, WebhookDelivery
from tests import imagegen
from tests.conftest import _solo_worker, wait_for
from tests.diagnosis.webhook_receiver import Receiver, serve, signature_is_valid
from training.models import ModelVersion

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SECRET = "integration-webhook-secret-42"


@pytest.fixture
def receiver():
    yield from serve(Receiver(statuses=[500, 200]))


@pytest.fixture
def worker(_broker, transactional_db):
    yield from _solo_worker(["inference", "maintenance"])  # deliver_webhook: maintenance


def test_a_flagged_stat_upload_is_announced_by_the_worker(
    settings, receiver, radiologist, production_model, worker
):
    settings.CXR_WEBHOOK_URL = receiver.url
    settings.CXR_WEBHOOK_SECRET = SECRET
    settings.CXR_WEBHOOK_ON = "stat-flagged"
    settings.CXR_WEBHOOK_BACKOFF_S = 0.2
    # Every abnormal class flags at any probability: the untrained model's result is flagged.
    abnormal = [c for c in production_model.class_labels if c != "normal"]
    ModelVersion.objects.filter(pk=production_model.pk).update(
        thresholds={c: 0.0 for c in abnormal}
    )

    routine = services.study_upload(
        uploaded_by=radiologist,
        data=imagegen.png_bytes(seed=3),
        patient_id="INT-W0",
        accession_number="ACC-INT-W0",
    )
    stat = services.study_upload(
        uploaded_by=radiologist,
        data=imagegen.png_bytes(seed=4),
        patient_id="INT-W1",
        accession_number="ACC-INT-W1",
        priority=Study.Priority.STAT,
    )

    def delivered():
        """the STAT study's webhook to be delivered"""
        return WebhookDelivery.objects.filter(status="delivered").first()

    delivery = wait_for(delivered, timeout=120)
    assert delivery.study_id == stat.study.pk and delivery.attempts == 2
    assert delivery.prediction_ids == [stat.prediction.pk]
    assert [r.headers["x-cxr-delivery"] for r in receiver.requests] == [str(delivery.pk)] * 2
    assert all(signature_is_valid(r, SECRET) for r in receiver.requests)
    body = json.loads(receiver.requests[-1].body)
    assert body["study"]["accession_number"] == "ACC-INT-W1"
    assert body["result"]["flagged_classes"]
    assert {f["class"] for f in body["result"]["flagged_classes"]} <= set(abnormal)
    wait_for(
        lambda: Study.objects.filter(pk=routine.study.pk, flagged_by_model=True).exists(),
        what="the routine study to be analysed and flagged",
    )
    assert WebhookDelivery.objects.count() == 1  # flagged, but routine: not announced
