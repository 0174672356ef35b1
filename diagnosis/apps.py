from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DiagnosisConfig(AppConfig):
    name = "diagnosis"
    verbose_name = "Diagnosis"

    def ready(self) -> None:
        from diagnosis import audit  # noqa: F401  connects the sign-in signal receivers
        from diagnosis.roles import sync_role_permissions

        # After every app's post_migrate (not only ours): the permissions of apps listed after
        # this one are created in their own post_migrate.
        post_migrate.connect(sync_role_permissions, dispatch_uid="cxr_sync_role_permissions")
