"""The DICOM objects sent to the PACS for a study (diagnosis.services.pacs, diagnosis.worker.pacs).

Kept beside diagnosis/models.py, which imports it: the app's models, one module each under
400 lines."""

from __future__ import annotations

from django.db import models


class PacsExport(models.Model):
    """One DICOM object (SR or Secondary Capture) sent to the PACS for a study, and how it went.

    Made when a study's result is complete or a reading is signed (CXR_PACS_SEND_ON), sent by the
    workers (diagnosis.worker.pacs). ``result_key`` says which result or reading it is of, so a
    redelivered task or a second finish makes no second copy, while a re-analysis or an
    amendment makes a new one. The UIDs are chosen on creation: a resend is the same instance.
    """

    class Kind(models.TextChoices):
        SR = "sr", "Structured report"
        SC = "sc", "Secondary capture"

    class Trigger(models.TextChoices):
        RESULT = "result", "Result"
        READING = "reading", "Reading"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    study = models.ForeignKey(
        "diagnosis.Study", on_delete=models.PROTECT, related_name="pacs_exports"
    )
    kind = models.CharField(max_length=2, choices=Kind.choices)
    trigger = models.CharField(max_length=8, choices=Trigger.choices)
    reading = models.ForeignKey(
        "diagnosis.Reading",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="pacs_exports",
    )
    result_key = models.CharField(max_length=200)
    status = models.CharField(
        max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    destination = models.CharField(max_length=300, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    series_instance_uid = models.CharField(max_length=64)
    sop_instance_uid = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "kind"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "kind", "trigger", "result_key"], name="one_pacs_export_per_result"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.study_id} ({self.status})"

    @property
    def audit_patient_mrn(self) -> str:
        """For the audit trail (cxrweb.audit)."""
        return self.study.patient.mrn

    @property
    def retrying(self) -> bool:
        return self.status == self.Status.PENDING and self.attempts > 0

    @property
    def status_text(self) -> str:
        if self.status == self.Status.SENT:
            return "Sent to PACS ✓"
        if self.status == self.Status.FAILED:
            return f"Failed: {self.last_error}"
        if self.retrying:
            return f"Retrying (attempt {self.attempts} failed: {self.last_error})"
        return "Waiting to be sent"
