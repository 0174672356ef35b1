"""The two roles as Django groups, and what the admin role may do in the Django admin."""

from __future__ import annotations

from diagnosis.permissions import ADMIN_GROUP, RADIOLOGIST_GROUP

# The admin role manages users, model versions and training in the Django admin. It may view,
# but never change or delete, the audit trail and signed readings (the admin has no such views
# for them anyway).
ADMIN_APPS = ("auth", "apitokens", "training", "diagnosis", "axes")
READ_ONLY_MODELS = ("auditevent", "reading")


def sync_role_permissions(**kwargs) -> None:
    from django.contrib.auth.models import Group, Permission

    Group.objects.get_or_create(name=RADIOLOGIST_GROUP)
    admin, _ = Group.objects.get_or_create(name=ADMIN_GROUP)
    perms = Permission.objects.filter(content_type__app_label__in=ADMIN_APPS)
    allowed = [
        p for p in perms
        if not (p.content_type.model in READ_ONLY_MODELS and not p.codename.startswith("view_"))
    ]
    admin.permissions.set(allowed)
