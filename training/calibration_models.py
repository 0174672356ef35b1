"""A model version's calibrations: the temperature, per-class thresholds and OOD reference its
weights are read with, refitted at a site on its own images or signed readings.

Imported by training.models (Django finds models through that module). The version's live fields
(temperature, thresholds, ood_reference, ood_summary) are a copy of its active calibration, whose
number is ``ModelVersion.calibration_number``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ModelCalibration(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Kind(models.TextChoices):
        TRAINING = "training", "Recorded with the version"
        DATASET = "dataset", "A labelled dataset"
        READINGS = "readings", "Signed readings"

    version = models.ForeignKey(
        "training.ModelVersion", on_delete=models.CASCADE, related_name="calibrations"
    )
    number = models.PositiveIntegerField(help_text="1, 2, ... per version; 1 is the training's.")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    source = models.CharField(max_length=255, blank=True, help_text="What it was fitted on.")
    dataset = models.ForeignKey(
        "training.Dataset",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="calibrations",
    )
    split = models.CharField(max_length=8, blank=True, help_text="val, test or all")
    readings = models.PositiveIntegerField(
        null=True, blank=True, help_text="Fitted on the signed readings of the last N studies."
    )
    n_images = models.PositiveIntegerField(default=0)
    target_sensitivity = models.FloatField(null=True, blank=True)
    temperature = models.FloatField(null=True, blank=True)
    thresholds = models.JSONField(default=dict, blank=True)
    ood_reference = models.FileField(upload_to="models/ood/", blank=True, max_length=255)
    ood_summary = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(
        default=dict, blank=True, help_text='{"before": {...}, "after": {...}} on the same images'
    )
    activations = models.JSONField(
        default=list, blank=True, help_text="When it was made active (ISO times), oldest first."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "number"], name="one_calibration_number_per_version"
            ),
        ]

    def __str__(self) -> str:
        return f"calibration {self.number} of {self.version.name}"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.DONE and self.version.calibration_number == self.number

    @property
    def ood_threshold(self) -> float | None:
        value = (self.ood_summary or {}).get("threshold")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def ordered_thresholds(self) -> list[tuple[str, float]]:
        """The thresholds in the version's class order (jsonb does not keep key order)."""
        order = list(self.version.class_labels or [])
        known = [(c, float(self.thresholds[c])) for c in order if c in (self.thresholds or {})]
        return known + [(c, float(t)) for c, t in (self.thresholds or {}).items() if c not in order]

    def ece(self, when: str) -> float | None:
        return ((self.metrics or {}).get(when) or {}).get("ece")

    @property
    def ece_before(self) -> float | None:
        return self.ece("before")

    @property
    def ece_after(self) -> float | None:
        return self.ece("after")
