"""STOW-RS (DICOMweb, PS3.18 10.5): `POST /dicomweb/studies` (or `/dicomweb/studies/{uid}`, which
takes only that study's instances) with a multipart/related body of application/dicom instances,
API token (or session) auth, the same service as the C-STORE SCP.

The answer is an application/dicom+json data set: ReferencedSOPSequence for each instance stored
(or already stored), FailedSOPSequence with a FailureReason (and an ErrorComment saying why) for
each refused; 200 when all were stored, 202 when some were, 409 when none was. A body that is not
multipart/related of application/dicom gets 415, a malformed one 400, with a JSON error.
"""

from __future__ import annotations

import logging
import warnings
from email.message import Message
from io import BytesIO

import pydicom
from django.conf import settings
from django.db import DatabaseError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from cxrweb.middleware import ENVELOPE_BYTES
from diagnosis.api_schema import COMMON, Error
from diagnosis.audit import audit_dicom_received, audit_dicom_refused
from diagnosis.services.dicom_in import (
    dicom_instance_store,
    error_comment,
    failure_status,
)
from diagnosis.services.uploads import StorageUnavailable
from training.ml.imaging import UploadRejected

logger = logging.getLogger(__name__)

DICOM = "application/dicom"
MAX_PARTS = 1000


class DicomJSONRenderer(JSONRenderer):
    media_type = "application/dicom+json"


class StowError(Exception):
    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status


def _content_type(value: str) -> Message:
    message = Message()
    message["Content-Type"] = value
    return message


def split_multipart_related(content_type: str, body: bytes) -> list[bytes]:
    """The application/dicom parts of a multipart/related body (RFC 2387), byte for byte."""
    header = _content_type(content_type)
    if header.get_content_type() != "multipart/related":
        raise StowError(
            'Send the instances as multipart/related; type="application/dicom" (PS3.18 STOW-RS).',
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        )
    root_type = (header.get_param("type") or DICOM).lower()
    if root_type != DICOM:
        raise StowError(
            f"Only application/dicom instances are taken, not {root_type}.",
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        )
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise StowError(
            "The multipart/related Content-Type has no boundary.", status.HTTP_400_BAD_REQUEST
        )
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise StowError(
            "The multipart body is empty or has no closing boundary.", status.HTTP_400_BAD_REQUEST
        )
    parts = []
    for chunk in chunks[1:-1]:
        _, _, rest = chunk.partition(b"\r\n")  # transport padding after the boundary
        if rest.startswith(b"\r\n"):  # a part with no header: the blank line comes at once
            headers, content = b"", rest[2:]
        else:
            headers, separator, content = rest.partition(b"\r\n\r\n")
            if not separator:
                raise StowError(
                    "A part's headers do not end in a blank line.", status.HTTP_400_BAD_REQUEST
                )
        part_type = _part_type(headers)
        if part_type not in ("", DICOM):
            raise StowError(
                f"A part is {part_type}; only application/dicom is taken.",
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            )
        parts.append(content)
    if len(parts) > MAX_PARTS:
        raise StowError(
            f"At most {MAX_PARTS} instances in one request.",
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    return parts


def request_body(request) -> bytes:
    """The request's body, a chunked one too (no Content-Length: Orthanc's DICOMweb client sends
    so by default) where the server de-chunks it (gunicorn sets ``wsgi.input_terminated``);
    Django alone reads such a body as empty. Refused over the upload limit."""
    meta = request.META
    if meta.get("CONTENT_LENGTH") or not meta.get("wsgi.input_terminated"):
        return request.body
    limit = settings.CXR_MAX_UPLOAD_BYTES + ENVELOPE_BYTES
    data = meta["wsgi.input"].read(limit + 1)
    if len(data) > limit:
        raise StowError(
            f"The request is over {limit / 2**20:.0f} MB; send the study in several requests.",
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    return data


def _part_type(headers: bytes) -> str:
    for line in headers.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            return _content_type(value.strip()).get_content_type()
    return ""


def _uids(data: bytes) -> tuple[str, str, str]:
    """(SOPClassUID, SOPInstanceUID, StudyInstanceUID) of an instance, empty when its header
    cannot be read."""
    tags = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, specific_tags=list(tags))
        return tuple(str(ds.get(tag, ""))[:64] for tag in tags)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - not DICOM, or cut off: the store says why
        return "", "", ""


# PS3.18 10.5: an instance of another study than the target resource's is not stored; a
# processing failure (0x0110), as other origin servers answer (Orthanc's DICOMweb plugin).
OTHER_STUDY_FAILURE = 0x0110


def _ui(value: str) -> dict:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _referenced(sop_class: str, sop_uid: str) -> dict:
    return {"00081150": _ui(sop_class), "00081155": _ui(sop_uid)}


STOW_RESPONSE = OpenApiTypes.OBJECT  # a DICOM JSON data set (PS3.18 F.2)
STOW_REQUEST = {'multipart/related; type="application/dicom"': OpenApiTypes.BINARY}
STOW_RESPONSES = {
    200: OpenApiResponse(STOW_RESPONSE, description="Every instance was stored."),
    202: OpenApiResponse(STOW_RESPONSE, description="Some were stored, some refused."),
    409: OpenApiResponse(STOW_RESPONSE, description="None was stored."),
    400: OpenApiResponse(Error, description="A malformed multipart body."),
    415: OpenApiResponse(Error, description="Not multipart/related application/dicom."),
    **COMMON,
}


class StowRs(APIView):
    """Store instances (STOW-RS): see the module's docstring."""

    renderer_classes = [DicomJSONRenderer, JSONRenderer]
    parser_classes: list = []  # the body is read as bytes, never through DRF's parsers

    @extend_schema(
        operation_id="dicomweb_stow_rs",
        summary="Store DICOM instances (DICOMweb STOW-RS, PS3.18 10.5)",
        description="A multipart/related body of application/dicom Part-10 instances (chest "
        "CR/DX only; others are refused). The answer is a DICOM JSON data set: "
        "ReferencedSOPSequence (00081199) for each instance stored, FailedSOPSequence (00081198) "
        "with FailureReason (00081197) and ErrorComment (00000902) for each refused.",
        request=STOW_REQUEST,
        responses=STOW_RESPONSES,
    )
    def post(self, request, study_uid: str | None = None):
        try:
            parts = split_multipart_related(request.content_type or "", request_body(request))
        except StowError as exc:
            return Response({"error": str(exc)}, status=exc.http_status)
        stored, failed = [], []
        origin = {"via": "stow-rs"}
        for data in parts:
            sop_class, sop_uid, its_study = _uids(data)
            if study_uid is not None and its_study != study_uid:
                other = UploadRejected(
                    f"Not stored: the instance is of study {its_study or '(none)'}, not of "
                    f"{study_uid}, the study in the request's URL.",
                    code="other_study",
                )
                audit_dicom_refused(
                    request, other, user=request.user, origin=origin, sop_instance_uid=sop_uid
                )
                failed.append(
                    {
                        **_referenced(sop_class, sop_uid),
                        "00081197": {"vr": "US", "Value": [OTHER_STUDY_FAILURE]},
                        "00000902": {"vr": "LO", "Value": ["other_study: not the URL's study"]},
                    }
                )
                continue
            try:
                result = dicom_instance_store(data=data, uploaded_by=request.user, filename=sop_uid)
            except (UploadRejected, StorageUnavailable, DatabaseError) as exc:
                reason = f"{exc.code}: {exc}" if isinstance(exc, UploadRejected) else str(exc)
                if isinstance(exc, UploadRejected):
                    audit_dicom_refused(
                        request, exc, user=request.user, origin=origin, sop_instance_uid=sop_uid
                    )
                else:
                    logger.error("STOW-RS instance %s not stored: %s", sop_uid, exc)
                failed.append(
                    {
                        **_referenced(sop_class, sop_uid),
                        "00081197": {"vr": "US", "Value": [failure_status(exc)]},
                        "00000902": {"vr": "LO", "Value": [error_comment(reason)]},
                    }
                )
                continue
            audit_dicom_received(request, result, user=request.user, origin=origin)
            stored.append(_referenced(sop_class, sop_uid))
        body: dict = {}
        if stored:
            body["00081199"] = {"vr": "SQ", "Value": stored}
        if failed:
            body["00081198"] = {"vr": "SQ", "Value": failed}
        code = 200 if not failed else (202 if stored else 409)
        return Response(body, status=code)


class StowRsStudy(StowRs):
    """Store instances of one study (STOW-RS with the study in the target resource)."""

    @extend_schema(
        operation_id="dicomweb_stow_rs_study",
        summary="Store DICOM instances of one study (DICOMweb STOW-RS, PS3.18 10.5)",
        description="As `POST /dicomweb/studies`, for the study whose StudyInstanceUID is in the "
        "URL: an instance of another study is not stored (FailureReason 0x0110, ErrorComment "
        "`other_study`, and an upload_rejected audit event).",
        request=STOW_REQUEST,
        responses=STOW_RESPONSES,
    )
    def post(self, request, study_uid: str | None = None):
        return super().post(request, study_uid=study_uid)
