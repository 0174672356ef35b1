from __future__ import annotations

from django.contrib import admin, messages

from training.models import ModelPromotion, ModelVersion
from training.services import PromotionNeedsExternalValidation, model_version_promote
from training.signals import model_version_rule_changed, send_and_count


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "architecture",
        "status",
        "classes",
        "created_at",
        "promoted_at",
        "promoted_by",
    )
    list_filter = ("status", "architecture")
    search_fields = ("name", "architecture", "sha256")
    readonly_fields = (
        "sha256",
        "weights",
        # A new temperature or OOD reference is a calibration (the model page, `manage.py
        # calibrate`): its number keys the workers' model cache, so an edit here would not reach
        # them.
        "temperature",
        "calibration_number",
        "ood_reference",
        "ood_summary",
        "status",
        "promoted_at",
        "promoted_by",
        "promotion_reason",
        "created_at",
        "created_by",
    )
    actions = ["promote", "promote_and_rerun_open"]

    @admin.display(description="classes")
    def classes(self, obj: ModelVersion) -> str:
        return ", ".join(obj.class_labels or [])

    def has_add_permission(self, request) -> bool:
        # Versions come from `manage.py import_model` or a training run, which check the weights.
        return False

    def save_model(self, request, obj: ModelVersion, form, change) -> None:
        super().save_model(request, obj, form, change)
        if change and {"normal_classes", "thresholds"} & set(form.changed_data):
            # Flags follow the new rule at once: the worklist sorts by the stored result.
            count = send_and_count(model_version_rule_changed, version=obj)
            self.message_user(
                request, f"The results of {count} studies were updated.", messages.INFO
            )

    @admin.action(description="Promote the selected version to production (or roll back to it)")
    def promote(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to promote.", messages.ERROR)
            return
        version = queryset.get()
        try:
            model_version_promote(
                version=version,
                promoted_by=request.user,
                request=request,
                reason=f"promoted in the admin by {request.user}",
            )
        except PromotionNeedsExternalValidation as exc:
            self._refused(request, exc)
            return
        self.message_user(request, f"{version.name} is now in production.", messages.SUCCESS)

    def _refused(self, request, exc: PromotionNeedsExternalValidation) -> None:
        # The admin action has no field for an override reason: the version page has one.
        self.message_user(
            request,
            f"{exc} An override reason can be given on the version's page "
            "(Model versions in the training pages).",
            messages.ERROR,
        )

    @admin.action(
        description="Promote the selected version (or roll back to it) and re-run open "
        "(unsigned) studies with it"
    )
    def promote_and_rerun_open(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to promote.", messages.ERROR)
            return
        try:
            version = model_version_promote(
                version=queryset.get(),
                promoted_by=request.user,
                request=request,
                reason=f"promoted in the admin by {request.user}",
                rerun_open=True,
            )
        except PromotionNeedsExternalValidation as exc:
            self._refused(request, exc)
            return
        rerun = version.reanalysis
        if rerun is None:
            self.message_user(
                request,
                f"{version.name} was already in production; nothing was re-run.",
                messages.INFO,
            )
            return
        self.message_user(
            request,
            f"{version.name} is now in production; {rerun.queued} images "
            f"of {rerun.studies} open studies queued for re-analysis.",
            messages.SUCCESS,
        )


@admin.register(ModelPromotion)
class ModelPromotionAdmin(admin.ModelAdmin):
    list_display = (
        "model_version",
        "previous_version",
        "promoted_by",
        "reason",
        "override_reason",
        "created_at",
    )
    readonly_fields = (
        "model_version",
        "previous_version",
        "promoted_by",
        "reason",
        "external_evaluations",
        "override_reason",
        "created_at",
    )

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
