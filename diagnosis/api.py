"""JSON API, version 1. Token auth: `Authorization: Token KEY` (manage.py create_token USER)."""

from __future__ import annotations

import logging

from django.core.exceptions import SuspiciousOperation
from django.db import DatabaseError
from django.http import Http404
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit
from cxrweb.responses import StoredFileUnreadable, bad_request_body, private_file_response
from diagnosis import api_schema, selectors, services
from diagnosis.api_json import prediction_json, reading_json, study_json
from diagnosis.audit import audit_upload, audit_upload_rejected, audit_view
from diagnosis.forms import StudyUploadForm
from diagnosis.models import Prediction, Reading, Study
from training.ml.imaging import UploadRejected, read_dicom_header

logger = logging.getLogger(__name__)


def exception_handler(exc, context):
    """DRF's handler, with every error body shaped as {"error": "..."}."""
    response = drf_exception_handler(exc, context)
    if response is not None:
        detail = response.data.get("detail") if isinstance(response.data, dict) else None
        response.data = {"error": str(detail) if detail is not None else str(response.data)}
        return response
    if isinstance(exc, DatabaseError):
        logger.exception("database unavailable")
        return Response(
            {"error": "The database is unavailable; nothing was stored. Try again shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    # Media that cannot be written, or read (not a missing file): the server's fault, a 503.
    if isinstance(exc, (services.StorageUnavailable, StoredFileUnreadable)):
        return Response(
            {"error": str(exc), "code": exc.code},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "60"},
        )
    if isinstance(exc, SuspiciousOperation):  # too many fields or files, a malformed request
        return Response(bad_request_body(exc), status=status.HTTP_400_BAD_REQUEST)
    return None


def _prediction_or_404(pk: int, selector=selectors.prediction_for_api) -> Prediction:
    try:
        return selector(pk)
    except Prediction.DoesNotExist as exc:
        raise Http404 from exc


class StudyListCreate(APIView):
    """POST one or several `image` files with one patient's fields: one study (see
    services.study_upload); an image joins the study when patient and accession match."""

    parser_classes = [MultiPartParser, FormParser]
    CONFLICTS = ("accession_conflict", "study_uid_conflict")

    @extend_schema(
        request={"multipart/form-data": api_schema.StudyUpload},
        responses={
            201: api_schema.StudyCreated,
            400: OpenApiResponse(
                api_schema.Error, description="A bad field or file; nothing stored."
            ),
            409: OpenApiResponse(
                api_schema.Error,
                description="Another patient's accession or study UID, or details that differ "
                "from the patient on record (identity_mismatch: send confirm_identity=true).",
            ),
            **api_schema.COMMON,
        },
    )
    def post(self, request):
        form = StudyUploadForm(request.POST, request.FILES, api=True)
        if not form.is_valid():
            fields = form.errors.get_json_data()
            first = next(iter(fields.values()))[0]
            return Response(
                {
                    "error": form.error_text(),
                    "code": first.get("code") or "invalid",
                    "fields": fields,
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        kwargs = form.upload_kwargs()
        several = len(form.image_files()) > 1
        try:
            if several:  # sent together: one study, all stored or none
                del kwargs["data"], kwargs["filename"]
                uploaded = services.study_upload_many(
                    uploaded_by=request.user, files=form.upload_files(), **kwargs
                )
            else:
                uploaded = [services.study_upload(uploaded_by=request.user, **kwargs)]
        except services.IdentityMismatch as exc:
            audit_upload_rejected(request, exc)
            return Response(
                {
                    "error": f"{exc} To confirm, send confirm_identity=true.",
                    "code": exc.code,
                    **exc.as_dict(),
                },
                status=status.HTTP_409_CONFLICT,
            )
        except UploadRejected as exc:
            audit_upload_rejected(request, exc)
            body = {"error": str(exc), "code": exc.code}
            if isinstance(exc, services.UploadFieldRejected):
                body["field"] = exc.field
            if several:
                body["filename"] = getattr(exc, "filename", "")
                body["error"] = f"{body['filename']}: {exc} Nothing was stored."
            # Another patient's study: a conflict with what is stored, never a silent attach.
            return Response(
                body,
                status=status.HTTP_409_CONFLICT
                if exc.code in self.CONFLICTS
                else status.HTTP_400_BAD_REQUEST,
            )
        for result in uploaded:
            audit_upload(request, result)  # browser or api: by how it signed in
        result = uploaded[0]
        if several:
            body = study_json(selectors.study_detail(result.study.pk), request)
            body["image_ids"] = [r.image.pk for r in uploaded]
            body["prediction_ids"] = [r.prediction.pk for r in uploaded]
            body["study_ids"] = list(dict.fromkeys(r.study.pk for r in uploaded))
        elif result.study_created:  # all of it is in hand: no second round of queries
            body = study_json(
                result.study, request, images=[result.image], predictions=[result.prediction]
            )
        else:
            body = study_json(selectors.study_detail(result.study.pk), request)
        body["image_id"] = result.image.pk
        body["prediction_id"] = result.prediction.pk
        return Response(body, status=status.HTTP_201_CREATED)


class DicomPeek(APIView):
    """The patient and study fields of a DICOM file (or its first megabyte), nothing stored.

    The upload page calls it to fill its form when a DICOM file is chosen.
    """

    parser_classes = [MultiPartParser]

    @extend_schema(
        request={"multipart/form-data": api_schema.DicomPeekIn},
        responses={200: api_schema.DicomHeader, 400: api_schema.Error, **api_schema.COMMON},
    )
    def post(self, request):
        f = request.FILES.get("file")
        if f is None:
            return Response(
                {"error": "Send the DICOM file (or its start) as `file`."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            info = read_dicom_header(f.read(1024 * 1024))
        except UploadRejected as exc:
            return Response(
                {"error": str(exc), "code": exc.code}, status=status.HTTP_400_BAD_REQUEST
            )
        fields = info.as_dict()
        fields.pop("tags", None)
        return Response(fields)


class StudyDetail(APIView):
    @extend_schema(
        responses={200: api_schema.StudyOut, 404: api_schema.NOT_FOUND, **api_schema.COMMON}
    )
    def get(self, request, pk: int):
        try:
            study = selectors.study_detail(pk)
        except Study.DoesNotExist as exc:
            raise Http404 from exc
        audit_view(
            request,
            AuditEvent.Action.VIEW_STUDY,
            study,
            view="study",
            study=study,
            detail={"via": "api"},
        )
        return Response(study_json(study, request))


class StudyReadings(APIView):
    """POST a signed reading: ``{agree, label, notes, prediction_ids[, amends]}``.

    ``prediction_ids`` are the study result's ``prediction_ids`` the reader was shown; when the
    study's current ones differ (a view finished, a re-analysis) the answer is 409 and nothing
    is stored. Agreeing signs the result's label; on an unreliable result (``unreliable``: a view
    unlike the training data) it is refused with 400, code ``unreliable_result``: send
    ``agree: false`` and the label you chose. Same rules as the study page's form.
    """

    @extend_schema(
        request=api_schema.ReadingIn,
        responses={
            201: api_schema.ReadingOut,
            400: api_schema.Error,
            404: api_schema.NOT_FOUND,
            409: OpenApiResponse(
                api_schema.ReadingStale,
                description="prediction_ids are not the study's current ones; nothing stored.",
            ),
            **api_schema.COMMON,
        },
    )
    def post(self, request, pk: int):
        try:
            study = selectors.study_detail(pk)
        except Study.DoesNotExist as exc:
            raise Http404 from exc
        data = request.data
        agree = data.get("agree")
        if not isinstance(agree, bool):
            return Response(
                {"error": "Send agree: true or false.", "code": "invalid", "field": "agree"},
                status=status.HTTP_400_BAD_REQUEST,
            )
        ids = data.get("prediction_ids")
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            return Response(
                {
                    "error": "Send prediction_ids: the study result's prediction_ids "
                    "you were shown (a list of integers, [] when there was none).",
                    "code": "invalid",
                    "field": "prediction_ids",
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        label, notes, amends_id = (
            data.get("label") or "",
            data.get("notes") or "",
            data.get("amends"),
        )
        if not isinstance(label, str) or not isinstance(notes, str) or len(notes) > 5000:
            return Response(
                {
                    "error": "label and notes are text (notes at most 5000 characters).",
                    "code": "invalid",
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        if not agree and not label.strip():
            return Response(
                {
                    "error": "Send the final label when you do not agree.",
                    "code": "invalid",
                    "field": "label",
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        amends = None
        if amends_id is not None:
            amends = (
                Reading.objects.filter(pk=amends_id, study=study).first()
                if isinstance(amends_id, int)
                else None
            )
            if amends is None:
                return Response(
                    {
                        "error": f"No reading {amends_id} of this study to amend.",
                        "code": "invalid",
                        "field": "amends",
                    },
                    status=status.HTTP_400_BAD_REQUEST,
                )
        try:
            reading = services.reading_sign(
                study=study,
                radiologist=request.user,
                final_label=label,
                agrees=agree,
                notes=notes,
                amends=amends,
                prediction_ids=ids,
            )
        except services.ReadingStale as exc:
            # The answer shows the current result: a view of the study's data.
            audit_view(
                request,
                AuditEvent.Action.VIEW_STUDY,
                study,
                view="study",
                study=study,
                detail={"via": "api", "stale_reading": True},
            )
            return Response(
                {"error": str(exc), "code": exc.code, "result": exc.result.as_dict()},
                status=status.HTTP_409_CONFLICT,
            )
        except services.ReadingRejected as exc:
            # code "unreliable_result": agree on a result unlike the training data.
            return Response(
                {"error": str(exc), "code": exc.code}, status=status.HTTP_400_BAD_REQUEST
            )
        audit(
            request,
            AuditEvent.Action.READING,
            reading,
            detail={
                "final_label": reading.final_label,
                "agrees": reading.agrees_with_model,
                "amends": amends.pk if amends else None,
                "prediction_ids": reading.prediction_ids,
            },
        )
        return Response(reading_json(reading, request), status=status.HTTP_201_CREATED)


class PredictionDetail(APIView):
    @extend_schema(
        responses={200: api_schema.Prediction, 404: api_schema.NOT_FOUND, **api_schema.COMMON}
    )
    def get(self, request, pk: int):
        prediction = _prediction_or_404(pk)
        # Clients poll this until the result is in: a repeat is one query, not one event.
        audit_view(
            request,
            AuditEvent.Action.VIEW_STUDY,
            prediction,
            view="prediction",
            study=prediction.image.study_id,
            detail={"via": "api"},
        )
        return Response(prediction_json(prediction, request))


class PredictionFile(APIView):
    """The overlay (`overlay.png`) or the transparent colour map alone (`heatmap-layer.png`), as
    PNG; with `successor` set, a deprecated v1 URL of the same file, which says so in its headers.

    A download of a patient's image: an audit event, as the study page's view is (the page's own
    overlays are part of that view; an API client may fetch these without ever reading the study).
    """

    field = "overlay"  # the Prediction file it serves: "overlay" or "heatmap"
    file_name = "overlay.png"  # its URL's last part, which the audit event names
    successor = ""  # a deprecated URL: the name of the canonical URL that replaces it
    schema = api_schema.PredictionFileSchema()

    @extend_schema(
        responses={
            (200, "image/png"): api_schema.PNG,
            404: OpenApiResponse(
                api_schema.Error, description="No such prediction, or no file yet."
            ),
            503: OpenApiResponse(api_schema.Error, description="Storage cannot be read; retry."),
            **api_schema.COMMON,
        }
    )
    def get(self, request, pk: int):
        prediction = _prediction_or_404(pk, selectors.prediction_file_for_api)
        f = getattr(prediction, self.field)
        if prediction.status != Prediction.Status.DONE or not f:
            return Response(
                {"error": f"Prediction {pk} has no heatmap yet ({prediction.status})."},
                status=status.HTTP_404_NOT_FOUND,
            )
        # A file missing from storage: JSON 404; storage that cannot be read: JSON 503.
        response = private_file_response(f, "image/png")
        audit(
            request,
            AuditEvent.Action.DOWNLOAD,
            prediction,
            detail={"file": self.file_name, "via": "api", "study": prediction.image.study_id},
        )
        return response

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if self.successor:  # every answer, errors too (RFC 9745 Deprecation, RFC 8594 Link)
            url = request.build_absolute_uri(reverse(self.successor, args=[kwargs["pk"]]))
            response["Deprecation"] = "true"
            response["Link"] = f'<{url}>; rel="successor-version"'
        return response
