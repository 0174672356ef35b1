from __future__ import annotations

from django.contrib import admin, messages

from diagnosis import services
from diagnosis.models import Image, Patient, Prediction, Study


class StudyInline(admin.TabularInline):
    model = Study
    fields = ("accession_number", "study_date", "view", "priority", "created_at")
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ("mrn", "name", "sex", "birth_date", "created_at")
    search_fields = ("mrn", "name")
    inlines = [StudyInline]


class ImageInline(admin.TabularInline):
    model = Image
    fields = ("format", "width", "height", "size_bytes", "sha256", "created_at")
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ("accession_number", "patient", "study_date", "view", "priority", "uploaded_by",
                    "created_at")
    list_filter = ("view", "priority", "study_date")
    search_fields = ("accession_number", "patient__mrn", "patient__name")
    list_select_related = ("patient", "uploaded_by")
    raw_id_fields = ("patient",)
    inlines = [ImageInline]


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("id", "study", "format", "width", "height", "size_bytes", "created_at")
    list_filter = ("format",)
    search_fields = ("sha256", "study__accession_number", "sop_instance_uid")
    list_select_related = ("study__patient",)
    readonly_fields = ("sha256", "original", "display", "size_bytes", "width", "height",
                       "source_mode", "duplicate_of", "dicom_tags", "created_at")
    raw_id_fields = ("study",)


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ("id", "image", "model_version", "status", "label", "attempts", "compute_ms",
                    "queued_at", "finished_at")
    list_filter = ("status", "model_version")
    search_fields = ("image__study__accession_number", "image__study__patient__mrn")
    list_select_related = ("image__study__patient", "model_version")
    readonly_fields = ("image", "model_version", "probabilities", "label", "cam_class", "cam_method",
                       "heatmap", "overlay", "attempts", "worker", "device", "queued_at",
                       "started_at", "finished_at", "compute_ms", "error", "status")
    actions = ["rerun_failed"]

    @admin.action(description="Re-run the selected failed predictions")
    def rerun_failed(self, request, queryset):
        count = 0
        for prediction in queryset.filter(status=Prediction.Status.FAILED):
            services.prediction_rerun(prediction=prediction)
            count += 1
        self.message_user(request, f"{count} failed prediction(s) queued again.", messages.SUCCESS)
