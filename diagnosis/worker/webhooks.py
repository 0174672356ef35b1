"""Sending one critical-finding webhook delivery: claim the row, POST the signed body, record
the answer, and say whether (and when) to try again. The task (diagnosis.tasks.deliver_webhook)
retries with Celery's countdown; the attempts are counted in our row.

Tried again: 5xx, 408, 429, timeouts and connection errors, with exponential back-off
(CXR_WEBHOOK_BACKOFF_S doubled each time, at most CXR_WEBHOOK_BACKOFF_MAX_S; a Retry-After of
seconds is honoured within that limit), up to CXR_WEBHOOK_MAX_ATTEMPTS. Failed at once: any other
4xx, and 3xx (redirects are not followed: a signed POST goes where it was configured to go).
"""

from __future__ import annotations

import datetime as dt
import http.client
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit
from diagnosis.models import WebhookDelivery
from diagnosis.services.webhooks import webhook_body, webhook_signature

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429})
USER_AGENT = "cxr-triage-webhook/1"


@dataclass(frozen=True)
class WebhookAttempt:
    """What one run of the task did: ``outcome`` is delivered, failed, retry or skipped (the row
    was not due or not pending: a duplicate message); ``retry_in`` seconds when to try again."""

    outcome: str
    retry_in: float | None = None


@dataclass(frozen=True)
class _Answer:
    status_code: int | None
    error: str
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        code = self.status_code
        return code is None or code >= 500 or code in RETRY_STATUS


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # the 3xx surfaces as an HTTPError: recorded, not followed


_opener = urllib.request.build_opener(_NoRedirect)


def webhook_deliver(*, delivery_id: int) -> WebhookAttempt:
    """One attempt at delivery `delivery_id`, if it is pending and due (a duplicate or early
    message does nothing)."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return WebhookAttempt("skipped")
    if not settings.CXR_WEBHOOK_URL:  # turned off since: no secret to sign with, perhaps
        _update(
            delivery,
            status=WebhookDelivery.Status.FAILED,
            last_error="Not sent: webhooks were turned off (CXR_WEBHOOK_URL is empty). "
            "Resend it once they are on again.",
        )
        return WebhookAttempt("failed")
    answer = _post(delivery)
    return _record(delivery, answer)


def _claim(delivery_id: int) -> WebhookDelivery | None:
    """Count the attempt with one conditional UPDATE, and push next_attempt_at past this
    attempt's end, so a second copy of the message that arrives meanwhile finds it not due."""
    now = timezone.now()
    lease = dt.timedelta(seconds=2 * settings.CXR_WEBHOOK_TIMEOUT_S + 60)
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id,
        status=WebhookDelivery.Status.PENDING,
        next_attempt_at__lte=now + dt.timedelta(seconds=1),  # clocks of worker and database
    ).update(attempts=F("attempts") + 1, last_attempt_at=now, next_attempt_at=now + lease)
    if not claimed:
        logger.info("webhook delivery %s: not pending or not due; nothing sent", delivery_id)
        return None
    return WebhookDelivery.objects.select_related("study__patient").get(pk=delivery_id)


def _post(delivery: WebhookDelivery) -> _Answer:
    body = webhook_body(delivery.payload)
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        delivery.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-CXR-Event": delivery.event,
            "X-CXR-Delivery": str(delivery.pk),
            "X-CXR-Timestamp": timestamp,
            "X-CXR-Signature": webhook_signature(
                secret=settings.CXR_WEBHOOK_SECRET, timestamp=timestamp, body=body
            ),
        },
    )
    try:
        with _opener.open(request, timeout=settings.CXR_WEBHOOK_TIMEOUT_S) as response:
            response.read(65536)
            return _Answer(response.status, "")
    except urllib.error.HTTPError as exc:
        text = exc.read(300).decode("utf-8", "replace") if exc.fp is not None else ""
        return _Answer(
            exc.code,
            f"HTTP {exc.code} {exc.reason}: {text}".strip(),
            _retry_after(exc.headers.get("Retry-After") if exc.headers else None),
        )
    except urllib.error.URLError as exc:
        return _Answer(None, f"Could not connect: {exc.reason}")
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        return _Answer(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: back-off as usual


def _record(delivery: WebhookDelivery, answer: _Answer) -> WebhookAttempt:
    now = timezone.now()
    fields = {"last_status_code": answer.status_code, "last_error": answer.error[:2000]}
    if answer.ok:
        _update(delivery, status=WebhookDelivery.Status.DELIVERED, delivered_at=now, **fields)
        _audit(delivery, answer, "delivered")
        return WebhookAttempt("delivered")
    if answer.retryable and delivery.attempts < settings.CXR_WEBHOOK_MAX_ATTEMPTS:
        wait = backoff_s(delivery.attempts, answer.retry_after)
        _update(delivery, next_attempt_at=now + dt.timedelta(seconds=wait), **fields)
        logger.warning(
            "webhook delivery %s: attempt %s failed (%s); again in %.0f s",
            delivery.pk,
            delivery.attempts,
            answer.error,
            wait,
        )
        return WebhookAttempt("retry", retry_in=wait)
    if answer.retryable:
        fields["last_error"] = f"Gave up after {delivery.attempts} attempts: {answer.error}"[:2000]
    _update(delivery, status=WebhookDelivery.Status.FAILED, **fields)
    _audit(delivery, answer, "failed")
    logger.warning("webhook delivery %s failed: %s", delivery.pk, fields["last_error"])
    return WebhookAttempt("failed")


def backoff_s(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before the next attempt after `attempts` ones: CXR_WEBHOOK_BACKOFF_S doubled
    each time, or the receiver's Retry-After when longer, at most CXR_WEBHOOK_BACKOFF_MAX_S."""
    wait = settings.CXR_WEBHOOK_BACKOFF_S * 2 ** max(0, attempts - 1)
    if retry_after is not None:
        wait = max(wait, retry_after)
    return float(min(wait, settings.CXR_WEBHOOK_BACKOFF_MAX_S))


def _update(delivery: WebhookDelivery, **fields) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
    for name, value in fields.items():
        setattr(delivery, name, value)


def _audit(delivery: WebhookDelivery, answer: _Answer, outcome: str) -> None:
    """The study's accession number left the app (or failed to): an audit event by the system."""
    audit(
        None,
        AuditEvent.Action.WEBHOOK_SENT,
        delivery,
        detail={
            "delivery": delivery.pk,
            "event": delivery.event,
            "outcome": outcome,
            "attempts": delivery.attempts,
            "status_code": answer.status_code,
            "url": _without_secrets(delivery.url),
        },
    )


def _without_secrets(url: str) -> str:
    """The address without user, password or query (where a receiver may put its token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{parts.path}"[:200]
