"""The audit trail: record who did what to which record, when and from where.

Call `audit(request, action, obj=...)` from views; sign-ins, sign-outs and failed sign-ins are
recorded by the auth signals below. Recording never breaks the request it describes: a failure to
write the event is logged as an error instead. `viewed_recently` lets a view (diagnosis.audit's
`audit_view`) coalesce a user's repeated views of one thing.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver
from django.utils import timezone

from cxrweb.audit.models import AuditEvent

logger = logging.getLogger(__name__)


def _client_ip(request) -> str | None:
    if request is None:
        return None
    # Behind a reverse proxy, configure it to set REMOTE_ADDR (e.g. gunicorn --forwarded-allow-ips)
    # rather than trusting a client-supplied X-Forwarded-For here.
    return request.META.get("REMOTE_ADDR") or None


def patient_mrn_of(obj) -> str:
    """The record number of the patient a record belongs to ("" for none). A record that
    belongs to a patient says so with an `audit_patient_mrn` property (diagnosis's models)."""
    try:
        return getattr(obj, "audit_patient_mrn", "") or ""
    except Exception:  # noqa: BLE001 - a missing relation must not hide the event itself
        return ""


def audit(
    request,
    action: str,
    obj=None,
    *,
    user=None,
    detail: dict | None = None,
    patient_mrn: str = "",
    ip_address: str | None = None,
) -> AuditEvent | None:
    """Records an event; ``ip_address`` names the peer of a caller without a request (the DICOM
    SCP), else it is the request's."""
    user = user if user is not None else getattr(request, "user", None)
    authenticated = user is not None and getattr(user, "is_authenticated", False)
    try:
        return AuditEvent.objects.create(
            user=user if authenticated else None,
            username=(user.get_username() if authenticated else "")[:150],
            action=action,
            object_type=type(obj).__name__ if obj is not None else "",
            object_id=str(obj.pk) if obj is not None and getattr(obj, "pk", None) else "",
            patient_mrn=(patient_mrn or patient_mrn_of(obj))[:64],
            ip_address=ip_address or _client_ip(request),
            user_agent=(request.META.get("HTTP_USER_AGENT", "") if request else "")[:300],
            path=(request.get_full_path() if request else "")[:300],
            detail=detail or {},
        )
    except Exception:  # noqa: BLE001
        logger.exception("could not record audit event %s", action)
        return None


def viewed_recently(request, action: str, obj, detail: dict) -> bool:
    """Whether the request's user has an event with this action, object and detail in the last
    CXR_AUDIT_VIEW_COALESCE_S seconds (so a repeated view need not be written again)."""
    window = settings.CXR_AUDIT_VIEW_COALESCE_S
    user = getattr(request, "user", None)
    if not window or user is None or not user.is_authenticated:
        return False
    try:
        return AuditEvent.objects.filter(
            at__gte=timezone.now() - timedelta(seconds=window),
            user_id=user.pk,
            action=action,
            object_type=type(obj).__name__ if obj is not None else "",
            object_id=str(obj.pk) if obj is not None else "",
            detail=detail,
        ).exists()
    except Exception:  # noqa: BLE001 - as in audit(): when in doubt, write the event
        logger.exception("could not look for a recent %s event", action)
        return False


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs) -> None:
    audit(request, AuditEvent.Action.LOGIN, user=user)


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs) -> None:
    if user is not None:
        audit(request, AuditEvent.Action.LOGOUT, user=user)


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    audit(
        request,
        AuditEvent.Action.LOGIN_FAILED,
        detail={"username": str(credentials.get("username", ""))[:150]},
    )
