"""The diagnosis app's audit events: views of a patient's pixels or results (coalesced), and
uploads, accepted or refused. The trail itself, and `audit()`, are in cxrweb.audit.
"""

from __future__ import annotations

from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit, viewed_recently
from diagnosis.models import Study


def audit_view(
    request, action: str, obj, *, view: str, study: Study | int | None, detail: dict | None = None
) -> AuditEvent | None:
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
    if viewed_recently(request, action, obj, detail):
        return None
    if isinstance(study, Study):
        mrn = study.patient.mrn
    elif study is not None:
        mrn = Study.objects.filter(pk=study).values_list("patient__mrn", flat=True).first() or ""
    else:
        mrn = ""
    return audit(request, action, obj, detail=detail, patient_mrn=mrn)


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
        raise ValueError(
            f"Unknown upload channel {via!r}: use one of {', '.join(UPLOAD_CHANNELS)}."
        )
    audit(
        request,
        AuditEvent.Action.UPLOAD,
        result.image,
        detail={"via": via, "format": result.image.format},
    )
    if result.identity_confirmed is not None:
        audit(
            request,
            AuditEvent.Action.IDENTITY_CONFIRMED,
            result.study,
            detail={"via": via, **result.identity_confirmed.as_dict()},
        )


def audit_upload_rejected(request, exc) -> None:
    """A refused upload: its code, file name and, for an identity mismatch, which fields differed."""
    detail = {"code": exc.code, "filename": request.FILES["image"].name[:200]}
    for key in ("field", "fields"):
        if hasattr(exc, key):
            detail[key] = getattr(exc, key)
    audit(
        request,
        AuditEvent.Action.UPLOAD_REJECTED,
        detail=detail,
        patient_mrn=getattr(exc, "mrn", ""),
    )


def _peer_ip(origin: dict) -> str | None:
    """The address of an SCP's peer ("host:port"); None for STOW-RS (the request's is used)."""
    return origin["peer"].rpartition(":")[0] or None if "peer" in origin else None


def audit_dicom_received(request, stored, *, user, origin: dict) -> None:
    """An instance received over DICOM (C-STORE SCP or STOW-RS): ``origin`` says how and from
    whom (``via``: dicom or stow-rs, the calling AE title and peer address for the SCP). An
    instance sent again is recorded too, as a duplicate."""
    image = stored.image
    audit(
        request,
        AuditEvent.Action.UPLOAD,
        image,
        user=user,
        detail={
            **origin,
            "format": image.format,
            "sop_instance_uid": image.sop_instance_uid,
            **({"duplicate": True} if stored.duplicate else {}),
        },
        ip_address=_peer_ip(origin),
    )


def audit_dicom_refused(request, exc, *, user, origin: dict, sop_instance_uid: str = "") -> None:
    """An instance refused over DICOM: the code and sentence the sender got (the "refused
    instances" an admin finds in the audit trail as upload_rejected with ``via`` set)."""
    detail = {**origin, "code": exc.code, "reason": str(exc)[:500]}
    if sop_instance_uid:
        detail["sop_instance_uid"] = sop_instance_uid[:64]
    for key in ("field", "fields"):
        if hasattr(exc, key):
            detail[key] = getattr(exc, key)
    audit(
        request,
        AuditEvent.Action.UPLOAD_REJECTED,
        user=user,
        detail=detail,
        patient_mrn=getattr(exc, "mrn", ""),
        ip_address=_peer_ip(origin),
    )
