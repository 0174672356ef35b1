"""Critical-finding webhooks, the web side: which study results are announced, the delivery row
and its payload (minimal PHI by design), its signature, and sending one again. The POST itself
is diagnosis.worker.webhooks; sending the task is diagnosis.dispatch.

See docs/operations.md, "Critical-finding webhooks".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from diagnosis.dispatch import webhook_enqueue_on_commit
from diagnosis.models import Study, WebhookDelivery
from diagnosis.results import DONE, StudyResult

logger = logging.getLogger(__name__)

DECISION_SUPPORT = "Decision support only: a radiologist reads every study."


class WebhookResendRefused(Exception):
    """A delivery cannot be sent again now; the message says what to do."""


def webhook_wanted(*, study: Study, result: StudyResult) -> bool:
    """Whether this result of `study` is announced: webhooks are on (CXR_WEBHOOK_URL), every
    view is done, the result is flagged, and the study is STAT unless CXR_WEBHOOK_ON is
    "flagged"."""
    if not settings.CXR_WEBHOOK_URL or result.status != DONE or not result.flagged:
        return False
    return settings.CXR_WEBHOOK_ON == "flagged" or study.priority == Study.Priority.STAT


def webhook_payload(*, study: Study, result: StudyResult) -> dict[str, Any]:
    """What the receiver gets. No patient name, record number, birth date or sex: the
    accession number and the link are enough to open the study in the app (after sign-in)."""
    path = study.get_absolute_url()
    public = settings.CXR_PUBLIC_URL
    return {
        "event": WebhookDelivery.STUDY_FLAGGED,
        "study": {
            "id": study.pk,
            "accession_number": study.accession_number,
            "priority": Study.Priority(study.priority).label,
            "url": f"{public}{path}" if public else None,
            "path": path,
            "created_at": study.created_at.isoformat(),
        },
        "result": {
            "label": result.label,
            "flagged_classes": [
                {
                    "class": label,
                    "probability": round(result.probabilities[label], 4),
                    "threshold": result.thresholds.get(label),
                }
                for label in result.flagged_classes
            ],
            "model_version": result.model_version,
            "model_versions": list(result.model_versions),
            "prediction_ids": sorted(result.prediction_ids),
        },
        "flagged_at": timezone.now().isoformat(),
        "notice": DECISION_SUPPORT,
    }


def webhook_delivery_create(*, study_id: int, result: StudyResult) -> WebhookDelivery | None:
    """After a study's result was stored: the delivery announcing it, when it is wanted
    (:func:`webhook_wanted`), sent once the transaction commits. Idempotent: one delivery per
    study, event and set of result predictions, so storing the same result again (a
    redelivered task, a threshold change that keeps the flag) sends nothing new. None when
    nothing is to be sent."""
    if not settings.CXR_WEBHOOK_URL:
        return None  # off: not even a query
    study = Study.objects.get(pk=study_id)
    if not webhook_wanted(study=study, result=result):
        return None
    ids = sorted(result.prediction_ids)
    event = WebhookDelivery.STUDY_FLAGGED
    key = hashlib.sha256(f"{study.pk}:{event}:{','.join(map(str, ids))}".encode()).hexdigest()
    delivery, created = WebhookDelivery.objects.get_or_create(
        key=key,
        defaults={
            "study": study,
            "event": event,
            "prediction_ids": ids,
            "url": settings.CXR_WEBHOOK_URL,
            "payload": webhook_payload(study=study, result=result),
            "next_attempt_at": timezone.now(),
        },
    )
    if created:
        webhook_enqueue_on_commit(delivery.pk)
        logger.info("study %s flagged: webhook delivery %s queued", study.pk, delivery.pk)
    return delivery


@transaction.atomic
def webhook_delivery_resend(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again (failed, or delivered and lost by the receiver), to the current
    CXR_WEBHOOK_URL, with a fresh count of attempts. The caller audits who asked."""
    if not settings.CXR_WEBHOOK_URL:
        raise WebhookResendRefused(
            "Webhooks are off: set CXR_WEBHOOK_URL (and CXR_WEBHOOK_SECRET), then resend."
        )
    updated = WebhookDelivery.objects.filter(
        pk=delivery.pk, status__in=[WebhookDelivery.Status.FAILED, WebhookDelivery.Status.DELIVERED]
    ).update(
        status=WebhookDelivery.Status.PENDING,
        attempts=0,
        url=settings.CXR_WEBHOOK_URL,
        next_attempt_at=timezone.now(),
        delivered_at=None,
    )
    if not updated:
        raise WebhookResendRefused(
            f"Delivery {delivery.pk} is still being sent; wait until it is delivered or failed."
        )
    webhook_enqueue_on_commit(delivery.pk)
    delivery.refresh_from_db()
    return delivery


def webhook_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed): compact JSON, keys sorted, so every attempt sends
    the same body."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """The X-CXR-Signature header: ``sha256=`` and the hex HMAC-SHA256, keyed with the secret, of
    the timestamp (X-CXR-Timestamp), a dot and the raw body. Signing the timestamp lets the
    receiver refuse an old message replayed."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"
