"""The audit trail: record who did what to which record, when and from where.

Call `audit(request, action, obj=...)` from views; sign-ins, sign-outs and failed sign-ins are
recorded by the auth signals below. Recording never breaks the request it describes: a failure to
write the event is logged as an error instead. Every response that carries a patient's pixels or
results calls `audit_view`, which coalesces a user's repeated views of one thing.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver
from django.utils import timezone

from diagnosis.models import AuditEvent, Image, Patient, Prediction, Study

logger = logging.getLogger(__name__)


def _client_ip(request) -> str | None:
    if request is None:
        return None
    # Behind a reverse proxy, configure it to set REMOTE_ADDR (e.g. gunicorn --forwarded-allow-ips)
    # rather than trusting a client-supplied X-Forwarded-For here.
    return request.META.get("REMOTE_ADDR") or None


def patient_mrn_of(obj) -> str:
    """The record number of the patient a record belongs to ("" for none)."""
    try:
        if isinstance(obj, Patient):
            return obj.mrn
        if isinstance(obj, Study):
            return obj.patient.mrn
        if isinstance(obj, Image):
            return obj.study.patient.mrn
        if isinstance(obj, Prediction):
            return obj.image.study.patient.mrn
        if hasattr(obj, "study"):
            return obj.study.patient.mrn
        if isinstance(getattr(obj, "prediction", None), Prediction):  # a class heatmap
            return obj.prediction.image.study.patient.mrn
    except Exception:  # noqa: BLE001 - a missing relation must not hide the event itself
        return ""
    return ""


def audit(request, action: str, obj=None, *, user=None, detail: dict | None = None,
          patient_mrn: str = "") -> AuditEvent | None:
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
            ip_address=_client_ip(request),
            user_agent=(request.META.get("HTTP_USER_AGENT", "") if request else "")[:300],
            path=(request.get_full_path() if request else "")[:300],
            detail=detail or {},
        )
    except Exception:  # noqa: BLE001
        logger.exception("could not record audit event %s", action)
        return None



def audit_view(request, action: str, obj, *, view: str, study: Study | int | None,
               detail: dict | None = None) -> AuditEvent | None:
    """Record that the user was shown `view` (a page, a result, an image) of `obj` in `study`.

    A repeat within CXR_AUDIT_VIEW_COALESCE_S seconds of an event with the same user, action,
    object and detail is already on record and costs one small query. The check reads the
    database, not process memory, so it holds across web server processes; two first views that
    race both write their event, so the first one is never lost. `study` may be a Study with its
    patient loaded, or its id (the patient's record number is then read only when an event is
    written); None for a list of several patients' studies (the worklist).
    """
    detail = {"view": view, **(detail or {})}
    if study is not None:
        detail["study"] = study if isinstance(study, int) else study.pk
    if _viewed_recently(request, action, obj, detail):
        return None
    if isinstance(study, Study):
        mrn = study.patient.mrn
    elif study is not None:
        mrn = Study.objects.filter(pk=study).values_list("patient__mrn", flat=True).first() or ""
    else:
        mrn = ""
    return audit(request, action, obj, detail=detail, patient_mrn=mrn)


def _viewed_recently(request, action: str, obj, detail: dict) -> bool:
    window = settings.CXR_AUDIT_VIEW_COALESCE_S
    user = getattr(request, "user", None)
    if not window or user is None or not user.is_authenticated:
        return False
    try:
        return AuditEvent.objects.filter(
            at__gte=timezone.now() - timedelta(seconds=window), user_id=user.pk, action=action,
            object_type=type(obj).__name__ if obj is not None else "",
            object_id=str(obj.pk) if obj is not None else "", detail=detail,
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
    audit(request, AuditEvent.Action.LOGIN_FAILED,
          detail={"username": str(credentials.get("username", ""))[:150]})


UPLOAD_CHANNELS = ("browser", "api", "dicom")


def upload_channel(request) -> str:
    """Where an upload came from: "api" for a client signed in with an API token, "browser" for a
    person signed in to the app (its upload form, or the page's script posting to the API)."""
    return "api" if getattr(request, "auth", None) is not None else "browser"


def audit_upload(request, result, *, via: str | None = None) -> None:
    """An accepted upload, with its channel (`via`: browser, api, or dicom for a DICOM network
    receiver; by default read from the request) and the file's format; with a confirmed identity
    mismatch, that confirmation with both sets of the patient's details (the upload left the
    record unchanged)."""
    via = via or upload_channel(request)
    if via not in UPLOAD_CHANNELS:
        raise ValueError(f"Unknown upload channel {via!r}: use one of {', '.join(UPLOAD_CHANNELS)}.")
    audit(request, AuditEvent.Action.UPLOAD, result.image,
          detail={"via": via, "format": result.image.format})
    if result.identity_confirmed is not None:
        audit(request, AuditEvent.Action.IDENTITY_CONFIRMED, result.study,
              detail={"via": via, **result.identity_confirmed.as_dict()})


def audit_upload_rejected(request, exc) -> None:
    """A refused upload: its code, file name and, for an identity mismatch, which fields differed."""
    detail = {"code": exc.code, "filename": request.FILES["image"].name[:200]}
    for key in ("field", "fields"):
        if hasattr(exc, key):
            detail[key] = getattr(exc, key)
    audit(request, AuditEvent.Action.UPLOAD_REJECTED, detail=detail,
          patient_mrn=getattr(exc, "mrn", ""))
