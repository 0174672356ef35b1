from __future__ import annotations

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "cxrweb.audit"
    label = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from cxrweb.audit import services  # noqa: F401  connects the sign-in signal receivers
