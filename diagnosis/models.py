"""Patients, studies, images and predictions."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse

from cxrweb.audit.models import AppendOnlyModel
from diagnosis.pacs_models import PacsExport
from diagnosis.results import NO_OOD_CHECK, prediction_ood_checked

__all__ = ["ClassHeatmap", "Image", "PacsExport", "Patient", "Prediction", "Reading", "Study"]


class Patient(models.Model):
    class Sex(models.TextChoices):
        FEMALE = "F", "Female"
        MALE = "M", "Male"
        OTHER = "O", "Other"
        UNKNOWN = "", "Unknown"

    mrn = models.CharField("patient ID (MRN)", max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    sex = models.CharField(max_length=1, choices=Sex.choices, blank=True)
    birth_date = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["mrn"]

    def __str__(self) -> str:
        return f"{self.mrn} {self.name}".strip()

    @property
    def audit_patient_mrn(self) -> str:
        """The patient's record number, for the audit trail (cxrweb.audit)."""
        return self.mrn


class Study(models.Model):
    class View(models.TextChoices):
        PA = "PA", "PA"
        AP = "AP", "AP"
        LATERAL = "LATERAL", "Lateral"
        UNKNOWN = "", "Unknown"

    class Priority(models.IntegerChoices):
        ROUTINE = 0, "Routine"
        URGENT = 1, "Urgent"
        STAT = 2, "STAT"

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    accession_number = models.CharField(max_length=64, unique=True)
    study_date = models.DateField(null=True, blank=True)
    view = models.CharField(max_length=8, choices=View.choices, blank=True)
    description = models.CharField(max_length=200, blank=True)
    study_instance_uid = models.CharField(max_length=64, blank=True)
    priority = models.PositiveSmallIntegerField(choices=Priority.choices, default=Priority.ROUTINE)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="studies"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Stored from the study's result (diagnosis.results.study_result) whenever a view's
    # prediction finishes, for the worklist to sort and filter by: flagged when any abnormal class
    # reaches its operating threshold on some view. The model never changes `priority`.
    flagged_by_model = models.BooleanField(default=False)
    flagged_finding = models.CharField(max_length=64, blank=True)
    result_label = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-priority", "-created_at"]
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return f"{self.accession_number} ({self.patient.mrn})"

    def get_absolute_url(self) -> str:
        return reverse("diagnosis:study", args=[self.pk])

    @property
    def audit_patient_mrn(self) -> str:
        """For the audit trail (cxrweb.audit)."""
        return self.patient.mrn


def _original_path(instance: Image, filename: str) -> str:
    return f"images/{instance.sha256[:2]}/{instance.sha256}/original{_suffix(instance.format)}"


def _display_path(instance: Image, filename: str) -> str:
    return f"images/{instance.sha256[:2]}/{instance.sha256}/display.png"


def _suffix(fmt: str) -> str:
    return {"PNG": ".png", "JPEG": ".jpg", "DICOM": ".dcm"}.get(fmt, ".bin")


class Image(models.Model):
    class Format(models.TextChoices):
        PNG = "PNG", "PNG"
        JPEG = "JPEG", "JPEG"
        DICOM = "DICOM", "DICOM"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="images")
    original = models.FileField(upload_to=_original_path, max_length=255)
    display = models.FileField(
        upload_to=_display_path,
        max_length=255,
        help_text="The 8-bit grayscale picture shown and analysed: the upload itself when it is an "
        "8-bit grayscale PNG or JPEG as a browser shows it, else a PNG made on upload.",
    )
    sha256 = models.CharField(max_length=64, db_index=True)
    format = models.CharField(max_length=8, choices=Format.choices)
    original_filename = models.CharField(max_length=255, blank=True)
    size_bytes = models.PositiveBigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    source_mode = models.CharField(max_length=64, blank=True)
    duplicate_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="An earlier image with the same content (same sha256).",
    )
    series_instance_uid = models.CharField(max_length=64, blank=True)
    sop_instance_uid = models.CharField(max_length=64, blank=True)
    dicom_tags = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"image {self.pk} of {self.study.accession_number}"

    @property
    def audit_patient_mrn(self) -> str:
        """For the audit trail (cxrweb.audit)."""
        return self.study.patient.mrn

    @property
    def display_content_type(self) -> str:
        """The display file's type: a JPEG upload can be its own display copy."""
        return (
            "image/jpeg" if self.display.name.lower().endswith((".jpg", ".jpeg")) else "image/png"
        )


class Prediction(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="predictions")
    # Null while no model version is in production: the prediction waits and is assigned the
    # production version when one is promoted.
    model_version = models.ForeignKey(
        "training.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="predictions",
    )
    status = models.CharField(
        max_length=8, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    error = models.TextField(blank=True)
    probabilities = models.JSONField(null=True, blank=True)
    label = models.CharField(max_length=64, blank=True)
    cam_class = models.CharField(max_length=64, blank=True)
    cam_method = models.CharField(max_length=32, blank=True)
    # The heatmap: the transparent colour map alone (RGBA), which the study page draws over the
    # X-ray. The overlay: the X-ray with the colour map blended in (RGB), for the report and API.
    heatmap = models.FileField(upload_to="heatmaps/", max_length=255, blank=True)
    overlay = models.FileField(upload_to="heatmaps/", max_length=255, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times a worker claimed it.")
    dispatches = models.PositiveSmallIntegerField(
        default=0, help_text="Times its task was sent to the broker."
    )
    last_dispatched_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the claimer.")
    device = models.CharField(max_length=32, blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    compute_ms = models.FloatField(null=True, blank=True)
    # How unlike the version's training data the image is (training.ml.ood.OODResult): the
    # in-distribution score against the version's OOD reference and its threshold (None when the
    # version has none), and whether it is flagged, with the plain-English reasons (the score
    # over the threshold, or an image check such as "a colour photograph, not a radiograph").
    ood_score = models.FloatField(null=True, blank=True)
    ood_threshold = models.FloatField(null=True, blank=True)
    ood_flagged = models.BooleanField(default=False)
    ood_reasons = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-queued_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["image", "model_version"], name="one_prediction_per_image_and_version"
            ),
            models.UniqueConstraint(
                fields=["image"],
                condition=Q(model_version__isnull=True),
                name="one_waiting_prediction_per_image",
            ),
        ]

    def __str__(self) -> str:
        return f"prediction {self.pk} ({self.status})"

    @property
    def audit_patient_mrn(self) -> str:
        """For the audit trail (cxrweb.audit)."""
        return self.image.study.patient.mrn

    @property
    def is_waiting_for_model(self) -> bool:
        return self.model_version_id is None and self.status == self.Status.QUEUED

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

    @property
    def status_message(self) -> str:
        if self.is_waiting_for_model:
            return (
                "Waiting for a model: no model version is in production yet. This image will be "
                "analysed as soon as an administrator promotes one."
            )
        if self.status == self.Status.QUEUED:
            return "Queued for analysis."
        if self.status == self.Status.RUNNING:
            return "The model is analysing this image."
        if self.status == self.Status.FAILED:
            return f"Analysis failed: {self.error}"
        return "Analysis finished."

    @property
    def ordered_probabilities(self) -> dict[str, float] | None:
        """Probabilities in the model version's class order (jsonb does not keep key order)."""
        if self.probabilities is None:
            return None
        order = list(self.model_version.class_labels) if self.model_version_id else []
        ordered = {
            label: self.probabilities[label] for label in order if label in self.probabilities
        }
        ordered.update({k: v for k, v in self.probabilities.items() if k not in ordered})
        return ordered

    @property
    def sorted_probabilities(self) -> list[tuple[str, float]]:
        if not self.probabilities:
            return []
        return sorted(self.probabilities.items(), key=lambda kv: kv[1], reverse=True)

    @property
    def ood(self) -> dict:
        """The out-of-distribution result, as the API shows it. ``checked``: scored against its
        version's OOD reference (None until finished); False: only the image checks ran."""
        checked = prediction_ood_checked(self)
        return {
            "score": self.ood_score,
            "threshold": self.ood_threshold,
            "flagged": self.ood_flagged,
            "reasons": list(self.ood_reasons or []),
            "checked": checked,
            "note": NO_OOD_CHECK if checked is False else None,
        }

    @property
    def top_probability(self) -> float | None:
        if not self.probabilities or not self.label:
            return None
        return self.probabilities.get(self.label)


class Reading(AppendOnlyModel):
    """A radiologist's signed reading of a study. Never edited: an amendment is a new reading."""

    change_refused = "A signed reading cannot be changed; sign an amendment instead."
    delete_refused = "A signed reading cannot be deleted."

    OTHER = "other"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="readings")
    prediction = models.ForeignKey(
        Prediction,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="readings",
        help_text="The prediction behind the study result's label when signing.",
    )
    model_version = models.ForeignKey(
        "training.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="readings",
    )
    radiologist = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="readings"
    )
    prediction_ids = models.JSONField(
        default=list,
        blank=True,
        help_text="The finished predictions of the study result the radiologist saw when signing.",
    )
    agrees_with_model = models.BooleanField(null=True, help_text="None when there was no result.")
    final_label = models.CharField(max_length=64)
    notes = models.TextField(blank=True)
    amends = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="amended_by"
    )
    signed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-signed_at"]

    def __str__(self) -> str:
        return (
            f"reading of {self.study.accession_number} by {self.radiologist} ({self.final_label})"
        )

    @property
    def audit_patient_mrn(self) -> str:
        """For the audit trail (cxrweb.audit)."""
        return self.study.patient.mrn

    @property
    def is_current(self) -> bool:
        return not hasattr(self, "amended_by")


class ClassHeatmap(models.Model):
    """A Grad-CAM heatmap of one class for one prediction, computed by the worker on demand."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="heatmaps")
    class_label = models.CharField(max_length=64)
    method = models.CharField(max_length=32, default="Grad-CAM")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    file = models.FileField(upload_to="heatmaps/", max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["prediction", "class_label", "method"],
                name="one_heatmap_per_class_and_method",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.method} of {self.class_label} for prediction {self.prediction_id}"

    @property
    def audit_patient_mrn(self) -> str:
        """For the audit trail (cxrweb.audit)."""
        return self.prediction.image.study.patient.mrn


from diagnosis.export_models import DatasetExport  # noqa: E402, F401 - a model of this app
from diagnosis.models_webhooks import WebhookDelivery as WebhookDelivery  # noqa: E402
