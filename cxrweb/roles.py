"""Who may use the clinical side of the app.

Roles are Django groups: `radiologist` (upload, view, review) and `admin` (also models and
training). Superusers count as admins. Anyone else is refused, server-side, everywhere
(cxrweb.permissions). The admin role's rights in the Django admin are set after every migrate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

RADIOLOGIST_GROUP = "radiologist"
ADMIN_GROUP = "admin"
CLINICAL_GROUPS = (RADIOLOGIST_GROUP, ADMIN_GROUP)

# The admin role manages users, model versions and training in the Django admin. It may view,
# but never change or delete, the audit trail and signed readings (the admin has no such views
# for them anyway).
ADMIN_APPS = ("auth", "apitokens", "training", "diagnosis", "audit", "axes")
READ_ONLY_MODELS = ("auditevent", "reading")


def _roles(user) -> frozenset[str]:
    """The user's clinical roles, read once per request (kept on the user object, which lives
    as long as the request): a page checks the role, and its menu asks again."""
    roles = getattr(user, "_cxr_roles", None)
    if roles is None:
        roles = frozenset(
            user.groups.filter(name__in=CLINICAL_GROUPS).values_list("name", flat=True)
        )
        user._cxr_roles = roles
    return roles


def is_clinical_user(user: AbstractBaseUser | AnonymousUser) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or bool(_roles(user))


def is_model_admin(user: AbstractBaseUser | AnonymousUser) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or ADMIN_GROUP in _roles(user)


def sync_role_permissions(**kwargs) -> None:
    """A post_migrate receiver: make both groups, and give the admin role its permissions."""
    from django.contrib.auth.models import Group, Permission

    Group.objects.get_or_create(name=RADIOLOGIST_GROUP)
    admin, _ = Group.objects.get_or_create(name=ADMIN_GROUP)
    perms = Permission.objects.filter(content_type__app_label__in=ADMIN_APPS)
    allowed = [
        p
        for p in perms
        if not (p.content_type.model in READ_ONLY_MODELS and not p.codename.startswith("view_"))
    ]
    admin.permissions.set(allowed)
