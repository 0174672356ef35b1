"""The audit trail's event, and the append-only models it shares with signed readings."""

from __future__ import annotations

from django.conf import settings
from django.db import connections, models, router, transaction
from django.utils import timezone

from cxrweb.audit import chain


class AppendOnlyQuerySet(models.QuerySet):
    """Refuses bulk changes, which bypass Model.save()/delete() (and so the admin's actions)."""

    def update(self, **kwargs):
        raise ValueError(f"{self.model.__name__} rows cannot be changed.")

    def delete(self):
        raise ValueError(f"{self.model.__name__} rows cannot be deleted.")

    _raw_delete = delete  # type: ignore[assignment]  # the bulk path too


class ChainedQuerySet(AppendOnlyQuerySet):
    """Rows are chained one by one in save(): bulk inserts would leave them unchained."""

    def bulk_create(self, *args, **kwargs):
        raise ValueError(f"{self.model.__name__} rows are chained: create them one by one.")


class AppendOnlyModel(models.Model):
    """Rows that are written once: never changed or deleted, one by one or in bulk."""

    change_refused = "These rows cannot be changed."
    delete_refused = "These rows cannot be deleted."

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError(self.change_refused)
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError(self.delete_refused)


class AuditEvent(AppendOnlyModel):
    """Who did what to which record, when and from where. Append-only."""

    change_refused = "Audit events cannot be changed."
    delete_refused = "Audit events cannot be deleted."

    class Action(models.TextChoices):
        VIEW_STUDY = "view_study", "Viewed a study"
        VIEW_IMAGE = "view_image", "Viewed an image"
        UPLOAD = "upload", "Uploaded an image"
        UPLOAD_REJECTED = "upload_rejected", "Upload rejected"
        READING = "reading", "Signed a reading"
        DOWNLOAD = "download", "Downloaded a file"
        REPORT = "report", "Opened a report"
        PROMOTE = "promote", "Promoted a model version"
        TRAIN = "train", "Started a training run"
        LOGIN = "login", "Signed in"
        LOGIN_FAILED = "login_failed", "Failed sign-in"
        LOGOUT = "logout", "Signed out"
        ACCESS_DENIED = "access_denied", "Access denied"
        EXPORT = "export", "Exported the audit trail"
        IDENTITY_CONFIRMED = "identity_confirmed", "Confirmed a patient despite other details"
        PATIENT_EDITED = "patient_edited", "Edited a patient's identity"
        TOKEN_CREATED = "token_created", "Issued an API token"
        TOKEN_REVOKED = "token_revoked", "Revoked an API token"
        VIEW_ADMIN = "view_admin", "Viewed patient data in the admin"
        REANALYSE = "reanalyse", "Queued a re-analysis"
        DATASET_EXPORT = "dataset_export", "Exported a de-identified dataset"
        CALIBRATE = "calibrate", "Fitted a model calibration"
        ACTIVATE_CALIBRATION = "activate_calibration", "Activated a model calibration"
        WEBHOOK_SENT = "webhook_sent", "Sent a critical-finding webhook"
        WEBHOOK_RESENT = "webhook_resent", "Queued a webhook to be sent again"
        PACS_RESENT = "pacs_resent", "Queued a PACS export to be sent again"

    # Set before the insert (not auto_now_add, which is set during it), as the chain hash needs it.
    at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    # No database constraint: deleting a user must not rewrite the trail (username is kept).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    username = models.CharField(
        max_length=150, blank=True, help_text="Kept if the user is deleted."
    )
    action = models.CharField(max_length=24, choices=Action.choices, db_index=True)
    object_type = models.CharField(max_length=40, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    patient_mrn = models.CharField(max_length=64, blank=True, db_index=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    path = models.CharField(max_length=300, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    # The hash chain (cxrweb.audit.chain; checked by `manage.py verify_audit`).
    prev_hash = models.CharField(max_length=64, blank=True, editable=False)
    hash = models.CharField(max_length=64, blank=True, editable=False)

    objects = ChainedQuerySet.as_manager()  # type: ignore[misc]

    class Meta:
        # Moved from the diagnosis app (migration diagnosis 0011): the table keeps its name.
        db_table = "diagnosis_auditevent"
        ordering = ["-at"]
        indexes = [
            # The coalescing lookup of a repeated view (services.viewed_recently), on every
            # audited GET: without it, PostgreSQL read every event of the user to find the one.
            models.Index(
                fields=["user", "action", "object_type", "object_id", "at"],
                name="audit_repeat_view",
            )
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username or '-'} {self.action}"

    def save(self, *args, **kwargs):
        """Insert the event as the chain's new head. The lock and the head are read in the same
        transaction as the insert, so concurrent writers cannot fork the chain."""
        if self.pk is not None:
            raise ValueError(self.change_refused)
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        with transaction.atomic(using=using):
            chain.append_lock(connections[using])
            head = (
                type(self)
                .objects.using(using)
                .order_by("-pk")
                .values_list("hash", flat=True)
                .first()
            )
            self.prev_hash = head or chain.GENESIS
            self.hash = chain.link_hash(self.prev_hash, chain.chain_values(self))
            super().save(*args, **kwargs)
