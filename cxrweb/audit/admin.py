from __future__ import annotations

from django.contrib import admin

from cxrweb.admin_base import ReadOnlyAdmin
from cxrweb.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = (
        "at",
        "username",
        "action",
        "object_type",
        "object_id",
        "patient_mrn",
        "ip_address",
    )
    list_filter = ("action", "at")
    search_fields = ("username", "patient_mrn", "object_id", "ip_address")
    date_hierarchy = "at"
