"""Critical-finding webhook deliveries: one row per announcement of a flagged study result."""

from __future__ import annotations

from django.db import models


class WebhookDelivery(models.Model):
    """One POST of a flagged study result to CXR_WEBHOOK_URL, with its attempts.

    ``key`` makes it idempotent: one delivery per study, event and set of result predictions
    (a redelivered task, or the result being stored again, finds the row and adds nothing; a
    re-analysis that flags the study with other predictions is a new delivery)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    STUDY_FLAGGED = "study.flagged"

    study = models.ForeignKey(
        "diagnosis.Study", on_delete=models.PROTECT, related_name="webhook_deliveries"
    )
    event = models.CharField(max_length=40, default=STUDY_FLAGGED)
    key = models.CharField(max_length=64, unique=True, help_text="sha256 of study, event, ids.")
    prediction_ids = models.JSONField(default=list)
    url = models.CharField(max_length=500, help_text="Where it is sent (CXR_WEBHOOK_URL).")
    payload = models.JSONField()
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(
        help_text="Not sent before; while an attempt runs, when it is presumed lost."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"webhook {self.pk} {self.event} ({self.status})"

    @property
    def audit_patient_mrn(self) -> str:
        """For the audit trail (cxrweb.audit)."""
        return self.study.patient.mrn
