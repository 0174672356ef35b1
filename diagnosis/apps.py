from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DiagnosisConfig(AppConfig):
    name = "diagnosis"
    verbose_name = "Diagnosis"

    def ready(self) -> None:
        from cxrweb.roles import sync_role_permissions
        from diagnosis import receivers
        from training import signals

        # After every app's post_migrate (not only ours): the permissions of apps listed after
        # this one are created in their own post_migrate.
        post_migrate.connect(sync_role_permissions, dispatch_uid="cxr_sync_role_permissions")
        signals.model_version_promoted.connect(
            receivers.assign_waiting_predictions, dispatch_uid="cxr_assign_waiting_predictions"
        )
        signals.open_studies_rerun_requested.connect(
            receivers.reanalyse_open_studies, dispatch_uid="cxr_reanalyse_open_studies"
        )
        signals.model_version_rule_changed.connect(
            receivers.restore_study_results, dispatch_uid="cxr_restore_study_results"
        )
        signals.calibration_readings_requested.connect(
            receivers.readings_for_calibration, dispatch_uid="cxr_readings_for_calibration"
        )
