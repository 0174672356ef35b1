"""De-identified exports of read studies into training datasets (diagnosis.services.exports)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class DatasetExport(models.Model):
    """One export: which studies were asked for, what was written, and the dataset it became.

    Holds no patient data: the studies by id, the counts, and the reasons studies or images were
    left out (by pseudonymous key, never by name or record number).
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    name = models.CharField(max_length=120, unique=True)
    study_ids = models.JSONField(default=list)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    folder = models.CharField(max_length=500, blank=True)
    images = models.PositiveIntegerField(default=0)
    studies_exported = models.PositiveIntegerField(default=0)
    patients = models.PositiveIntegerField(default=0)
    class_counts = models.JSONField(default=dict, blank=True)
    excluded = models.JSONField(
        default=list, blank=True, help_text="[{key, reason}]: studies or images left out, and why"
    )
    dataset = models.ForeignKey(
        "training.Dataset", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"export {self.name} ({self.get_status_display().lower()})"
