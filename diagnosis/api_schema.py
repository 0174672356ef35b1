"""The API's OpenAPI 3 schema: the JSON shapes of diagnosis.api_json as serializers (used only to
describe them, never to validate or render), and the schema and Swagger UI views.

The views answer the same clinical users as the API (SPECTACULAR_SETTINGS' SERVE_PERMISSIONS); a
schema is no patient data, so reading it is no audit event.
"""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from diagnosis.models import Patient, Study


class Error(serializers.Serializer):
    error = serializers.CharField(help_text="What went wrong and what to do.")
    code = serializers.CharField(required=False, help_text="A machine-readable reason.")
    field = serializers.CharField(required=False, help_text="The request field at fault.")


class OOD(serializers.Serializer):
    """How unlike the model version's training data the image is."""

    score = serializers.FloatField(
        allow_null=True,
        help_text="In-distribution distance against the version's training features (higher: "
        "more unlike them); null when the version has no OOD reference.",
    )
    threshold = serializers.FloatField(
        allow_null=True, help_text="The version's threshold (from its validation split)."
    )
    flagged = serializers.BooleanField(
        help_text="Score over the threshold, or an image check failed: the result is unreliable."
    )
    reasons = serializers.ListField(
        child=serializers.CharField(), help_text="Plain-English reasons when flagged."
    )
    checked = serializers.BooleanField(
        allow_null=True,
        help_text="Scored against the version's OOD reference; false: the version has none, "
        "only the image checks ran (an image unlike the training data is not flagged); null "
        "until the prediction is done.",
    )
    note = serializers.CharField(allow_null=True, help_text="What to tell a reader when unchecked.")


class StudyOOD(serializers.Serializer):
    """Whether the study's result was checked for images unlike the training data."""

    checked = serializers.BooleanField(
        help_text="Every finished view was scored against its version's OOD reference."
    )
    unchecked_versions = serializers.ListField(
        child=serializers.CharField(), help_text="The versions with no OOD reference."
    )
    note = serializers.CharField(allow_null=True, help_text="What to tell a reader when unchecked.")


class Prediction(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.URLField()
    status = serializers.CharField(help_text="queued | running | done | failed")
    message = serializers.CharField(allow_blank=True)
    model_version = serializers.CharField(allow_null=True)
    model_version_id = serializers.IntegerField(allow_null=True)
    architecture = serializers.CharField(allow_null=True)
    label = serializers.CharField(allow_null=True)
    probabilities = serializers.DictField(child=serializers.FloatField(), help_text="By class.")
    cam_class = serializers.CharField(allow_null=True)
    cam_method = serializers.CharField(allow_null=True)
    overlay_url = serializers.URLField(
        allow_null=True, help_text="The X-ray with the colour map blended in (PNG)."
    )
    heatmap_layer_url = serializers.URLField(
        allow_null=True, help_text="The transparent colour map alone (PNG)."
    )
    heatmap_url = serializers.URLField(allow_null=True, help_text="Deprecated: overlay_url.")
    cam_url = serializers.URLField(allow_null=True, help_text="Deprecated: heatmap_layer_url.")
    error = serializers.CharField(allow_null=True)
    image_id = serializers.IntegerField()
    study_id = serializers.IntegerField()
    queued_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    compute_ms = serializers.IntegerField(allow_null=True)
    device = serializers.CharField(allow_null=True)
    ood = OOD()


class StudyImage(serializers.Serializer):
    id = serializers.IntegerField()
    format = serializers.CharField(help_text="PNG | JPEG | DICOM")
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    sha256 = serializers.CharField()
    duplicate_of_image = serializers.IntegerField(allow_null=True)


class StudyResult(serializers.Serializer):
    """The study's one result (diagnosis.results.study_result): what every surface shows."""

    status = serializers.CharField(help_text="done | pending | failed | none")
    label = serializers.CharField(allow_null=True)
    probabilities = serializers.DictField(child=serializers.FloatField())
    flagged = serializers.BooleanField()
    flagged_classes = serializers.ListField(child=serializers.CharField())
    driving_image = serializers.IntegerField(allow_null=True)
    prediction_ids = serializers.ListField(child=serializers.IntegerField())
    model_version = serializers.CharField(allow_null=True)
    model_versions = serializers.ListField(child=serializers.CharField())
    thresholds = serializers.DictField(child=serializers.FloatField())
    unreliable = serializers.BooleanField(
        help_text="A view's current prediction is unlike the training data (ood.flagged)."
    )
    unreliable_reasons = serializers.ListField(child=serializers.CharField())
    shown_label = serializers.CharField(
        allow_null=True,
        help_text='The label to show: "unreliable — unlike the training data" instead of a '
        "normal class when the result is unreliable, else label.",
    )
    needs_attention = serializers.BooleanField(
        help_text="A view's analysis failed or the result is unreliable: read it first."
    )
    ood = StudyOOD()


class PacsExportOut(serializers.Serializer):
    """One DICOM object sent (or being sent) to the PACS (docs/operations.md)."""

    kind = serializers.CharField(help_text="sr (structured report) | sc (secondary capture)")
    trigger = serializers.CharField(help_text="result | reading")
    status = serializers.CharField(help_text="pending | sent | failed")
    retrying = serializers.BooleanField(help_text="Pending after a failed try.")
    attempts = serializers.IntegerField()
    last_error = serializers.CharField(allow_blank=True)
    sop_instance_uid = serializers.CharField()
    series_instance_uid = serializers.CharField()
    study_instance_uid = serializers.CharField()
    sent_at = serializers.DateTimeField(allow_null=True)


class StudyOut(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.URLField()
    patient_id = serializers.CharField(help_text="The MRN.")
    accession_number = serializers.CharField()
    study_date = serializers.DateField(allow_null=True)
    view = serializers.CharField(allow_blank=True)
    priority = serializers.CharField()
    images = StudyImage(many=True)
    predictions = Prediction(many=True)
    result = StudyResult()
    pacs_exports = PacsExportOut(many=True, help_text="Newest first, at most 8.")


class StudyCreated(StudyOut):
    image_id = serializers.IntegerField(help_text="The (first) image stored.")
    prediction_id = serializers.IntegerField(help_text="Its prediction, queued.")
    image_ids = serializers.ListField(
        child=serializers.IntegerField(), required=False, help_text="Several files: each image."
    )
    prediction_ids = serializers.ListField(child=serializers.IntegerField(), required=False)
    study_ids = serializers.ListField(child=serializers.IntegerField(), required=False)


class StudyUpload(serializers.Serializer):
    """diagnosis.forms.StudyUploadForm's fields, as the API takes them."""

    image = serializers.ListField(
        child=serializers.FileField(),
        help_text="PNG, JPEG or DICOM, one or several: several become one study, all stored "
        "or none. The content decides the type, not the name.",
    )
    patient_id = serializers.CharField(
        max_length=64, required=False, help_text="The MRN; required unless the DICOM has it."
    )
    accession_number = serializers.CharField(
        max_length=64,
        required=False,
        help_text="Generated when empty; an existing one adds the image to that study.",
    )
    view = serializers.ChoiceField(choices=[c for c in Study.View.choices if c[0]], required=False)
    priority = serializers.ChoiceField(choices=Study.Priority.choices, required=False)
    patient_name = serializers.CharField(max_length=200, required=False)
    patient_sex = serializers.ChoiceField(
        choices=[c for c in Patient.Sex.choices if c[0]], required=False
    )
    patient_birth_date = serializers.DateField(required=False)
    confirm_identity = serializers.BooleanField(
        required=False,
        help_text="After a 409 identity_mismatch: the image joins the patient on record.",
    )


class DicomPeekIn(serializers.Serializer):
    file = serializers.FileField(help_text="A DICOM file, or its first megabyte.")


class DicomHeader(serializers.Serializer):
    patient_id = serializers.CharField(allow_blank=True)
    patient_name = serializers.CharField(allow_blank=True)
    patient_sex = serializers.CharField(allow_blank=True, help_text='"M", "F", "O" or ""')
    patient_birth_date = serializers.DateField(allow_null=True)
    accession_number = serializers.CharField(allow_blank=True)
    study_date = serializers.DateField(allow_null=True)
    study_description = serializers.CharField(allow_blank=True)
    view_position = serializers.CharField(allow_blank=True)
    modality = serializers.CharField(allow_blank=True)
    body_part = serializers.CharField(allow_blank=True)
    study_instance_uid = serializers.CharField(allow_blank=True)
    series_instance_uid = serializers.CharField(allow_blank=True)
    sop_instance_uid = serializers.CharField(allow_blank=True)
    photometric_interpretation = serializers.CharField(allow_blank=True)
    bits_stored = serializers.IntegerField(allow_null=True)


class ReadingIn(serializers.Serializer):
    agree = serializers.BooleanField(
        help_text="Agreeing signs the result's label; refused (400, code unreliable_result) "
        "when the result is unreliable: send the label you chose instead."
    )
    label = serializers.CharField(
        required=False, help_text="The final label; required to disagree."
    )
    notes = serializers.CharField(required=False, max_length=5000)
    prediction_ids = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="The study result's prediction_ids you were shown ([] when none); 409 when "
        "they are no longer current.",
    )
    amends = serializers.IntegerField(required=False, help_text="A reading of this study.")


class ReadingOut(serializers.Serializer):
    id = serializers.IntegerField()
    study_id = serializers.IntegerField()
    label = serializers.CharField()
    agree = serializers.BooleanField()
    notes = serializers.CharField(allow_blank=True)
    prediction_ids = serializers.ListField(child=serializers.IntegerField())
    model_version = serializers.CharField(allow_null=True)
    radiologist = serializers.CharField()
    amends = serializers.IntegerField(allow_null=True)
    signed_at = serializers.DateTimeField()
    study_url = serializers.URLField()


class ReadingStale(Error):
    result = StudyResult(help_text="The study's current result.")


# The answers every endpoint may give besides its own.
NOT_SIGNED_IN = OpenApiResponse(Error, description="No valid token or session.")
NO_ROLE = OpenApiResponse(Error, description="The account has no clinical role.")
NOT_FOUND = OpenApiResponse(Error, description="No such object.")
COMMON = {401: NOT_SIGNED_IN, 403: NO_ROLE}
PNG = OpenApiResponse(OpenApiTypes.BINARY, description="A PNG file.")


class PredictionFileSchema(AutoSchema):
    """A PNG URL of api.PredictionFile; deprecated when the URL has a successor."""

    def is_deprecated(self) -> bool:
        return bool(getattr(self.view, "successor", "")) or super().is_deprecated()

    def get_description(self) -> str:
        successor = getattr(self.view, "successor", "")
        if successor:
            path = reverse(successor, args=[0]).replace("/0/", "/{id}/")
            return f"Deprecated: the same file as {path}; answers say so (Deprecation, Link)."
        return super().get_description()


class _JSONErrors:
    """Refusals (not signed in, no role) as the API's JSON {"error": ...}, not as the view's own
    format (a YAML document, an HTML page)."""

    def handle_exception(self, exc):
        response = super().handle_exception(exc)  # type: ignore[misc]
        self.request.accepted_renderer = JSONRenderer()  # type: ignore[attr-defined]
        self.request.accepted_media_type = "application/json"  # type: ignore[attr-defined]
        return response


class SchemaView(_JSONErrors, SpectacularAPIView):
    """The OpenAPI 3 document: YAML, or JSON with ?format=json or Accept: application/json."""


class DocsView(_JSONErrors, SpectacularSwaggerSplitView):
    """Swagger UI from the sidecar's static files; its start script is a separate URL
    (?script=) and its page has no inline style, so the site's CSP holds."""

    url_name = "api:schema"
    template_name = "api/swagger_ui.html"
