from __future__ import annotations

from django.contrib import admin, messages

from cxrweb.admin_base import ReadOnlyAdmin
from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit, patient_mrn_of
from cxrweb.roles import is_model_admin
from diagnosis import services
from diagnosis.forms import PatientAdminForm
from diagnosis.models import (
    ClassHeatmap,
    Image,
    Patient,
    Prediction,
    Reading,
    Study,
    WebhookDelivery,
)


class AuditedAdmin(admin.ModelAdmin):
    """The admin's pages show patient data too: opening a record, and each page of a list, is an
    audit event (view_admin) naming the patient(s), like the clinical pages."""

    def change_view(self, request, object_id, form_url="", extra_context=None):
        response = super().change_view(request, object_id, form_url, extra_context)
        if request.method == "GET" and response.status_code == 200:
            obj = response.context_data.get("original")
            if obj is not None:
                audit(
                    request,
                    AuditEvent.Action.VIEW_ADMIN,
                    obj,
                    detail={"view": f"admin {self.opts.model_name}"},
                )
        return response

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            mrns = sorted({patient_mrn_of(obj) for obj in changelist.result_list} - {""})
            audit(
                request,
                AuditEvent.Action.VIEW_ADMIN,
                patient_mrn=mrns[0] if len(mrns) == 1 else "",
                detail={
                    "view": f"admin {self.opts.model_name} list",
                    "query": request.GET.urlencode()[:200],
                    "patients": mrns,
                },
            )
        return response


class StudyInline(admin.TabularInline):
    model = Study
    fields = ("accession_number", "study_date", "view", "priority", "created_at")
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False


@admin.register(Patient)
class PatientAdmin(AuditedAdmin):
    list_display = ("mrn", "name", "sex", "birth_date", "created_at")
    search_fields = ("mrn", "name")
    inlines = [StudyInline]
    form = PatientAdminForm
    IDENTITY_FIELDS = ("mrn", "name", "sex", "birth_date")

    def save_model(self, request, obj, form, change):
        """Save; a change of the patient's identity is an audit event with old and new values."""
        old = None
        if change:
            old = Patient.objects.filter(pk=obj.pk).values(*self.IDENTITY_FIELDS).first()
        super().save_model(request, obj, form, change)
        if old is None:
            return
        changes = {
            field: {"old": _json_value(old[field]), "new": _json_value(getattr(obj, field))}
            for field in self.IDENTITY_FIELDS
            if old[field] != getattr(obj, field)
        }
        if changes:
            audit(
                request,
                AuditEvent.Action.PATIENT_EDITED,
                obj,
                patient_mrn=obj.mrn,
                detail={"via": "admin", "changes": changes},
            )


def _json_value(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


class ImageInline(admin.TabularInline):
    model = Image
    fields = ("format", "width", "height", "size_bytes", "sha256", "created_at")
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False


@admin.register(Study)
class StudyAdmin(AuditedAdmin):
    list_display = (
        "accession_number",
        "patient",
        "study_date",
        "view",
        "priority",
        "uploaded_by",
        "created_at",
    )
    list_filter = ("view", "priority", "study_date")
    search_fields = ("accession_number", "patient__mrn", "patient__name")
    list_select_related = ("patient", "uploaded_by")
    raw_id_fields = ("patient",)
    inlines = [ImageInline]


@admin.register(Image)
class ImageAdmin(AuditedAdmin):
    list_display = ("id", "study", "format", "width", "height", "size_bytes", "created_at")
    list_filter = ("format",)
    search_fields = ("sha256", "study__accession_number", "sop_instance_uid")
    list_select_related = ("study__patient",)
    readonly_fields = (
        "sha256",
        "original",
        "display",
        "size_bytes",
        "width",
        "height",
        "source_mode",
        "duplicate_of",
        "dicom_tags",
        "created_at",
    )
    raw_id_fields = ("study",)


@admin.register(Prediction)
class PredictionAdmin(AuditedAdmin):
    list_display = (
        "id",
        "image",
        "model_version",
        "status",
        "label",
        "attempts",
        "compute_ms",
        "queued_at",
        "finished_at",
    )
    list_filter = ("status", "model_version")
    search_fields = ("image__study__accession_number", "image__study__patient__mrn")
    list_select_related = ("image__study__patient", "model_version")
    readonly_fields = (
        "image",
        "model_version",
        "probabilities",
        "label",
        "cam_class",
        "cam_method",
        "heatmap",
        "overlay",
        "attempts",
        "worker",
        "device",
        "queued_at",
        "started_at",
        "finished_at",
        "compute_ms",
        "error",
        "status",
    )
    actions = ["rerun_failed"]

    @admin.action(description="Re-run the selected failed predictions")
    def rerun_failed(self, request, queryset):
        count = 0
        for prediction in queryset.filter(status=Prediction.Status.FAILED):
            services.prediction_rerun(prediction=prediction)
            count += 1
        self.message_user(request, f"{count} failed prediction(s) queued again.", messages.SUCCESS)


@admin.register(Reading)
class ReadingAdmin(AuditedAdmin, ReadOnlyAdmin):
    list_display = (
        "study",
        "radiologist",
        "final_label",
        "agrees_with_model",
        "model_version",
        "signed_at",
        "amends",
    )
    list_filter = ("agrees_with_model", "model_version", "signed_at")
    search_fields = ("study__accession_number", "study__patient__mrn", "radiologist__username")
    list_select_related = ("study__patient", "radiologist", "model_version", "amends")


@admin.register(ClassHeatmap)
class ClassHeatmapAdmin(AuditedAdmin):
    list_display = ("prediction", "class_label", "method", "status", "created_at")
    list_select_related = ("prediction__image__study__patient",)
    list_filter = ("status", "method")
    readonly_fields = ("prediction", "class_label", "method", "status", "error", "file")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(AuditedAdmin, ReadOnlyAdmin):
    """The critical-finding webhook log: read-only, with a Resend action (audited)."""

    list_display = (
        "id",
        "accession_number",
        "status",
        "attempts",
        "last_status_code",
        "short_error",
        "created_at",
    )
    list_filter = ("status", "created_at")
    search_fields = ("study__accession_number",)
    list_select_related = ("study__patient",)
    readonly_fields = (
        "study",
        "event",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "url",
        "prediction_ids",
        "payload",
        "created_at",
        "last_attempt_at",
        "next_attempt_at",
        "delivered_at",
        "key",
    )
    actions = ["resend"]

    @admin.display(description="accession number", ordering="study__accession_number")
    def accession_number(self, obj: WebhookDelivery) -> str:
        return obj.study.accession_number

    @admin.display(description="last error")
    def short_error(self, obj: WebhookDelivery) -> str:
        return obj.last_error if len(obj.last_error) <= 60 else f"{obj.last_error[:60]}…"

    def has_resend_permission(self, request) -> bool:
        return is_model_admin(request.user)

    @admin.action(description="Resend the selected deliveries", permissions=["resend"])
    def resend(self, request, queryset):
        sent, refused = 0, []
        for delivery in queryset.select_related("study__patient"):
            try:
                services.webhook_delivery_resend(delivery=delivery)
            except services.WebhookResendRefused as exc:
                refused.append(str(exc))
                continue
            audit(
                request,
                AuditEvent.Action.WEBHOOK_RESENT,
                delivery,
                detail={"delivery": delivery.pk, "event": delivery.event, "via": "admin"},
            )
            sent += 1
        if sent:
            self.message_user(request, f"{sent} delivery(ies) queued again.", messages.SUCCESS)
        for reason in sorted(set(refused)):
            self.message_user(request, reason, messages.WARNING)
