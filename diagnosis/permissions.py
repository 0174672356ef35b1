"""Who may use the clinical side of the app.

Roles are Django groups: `radiologist` (upload, view, review) and `admin` (also models and
training). Superusers count as admins. Anyone else is refused, server-side, everywhere.
"""

from __future__ import annotations

from functools import wraps
from typing import TYPE_CHECKING

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

RADIOLOGIST_GROUP = "radiologist"
ADMIN_GROUP = "admin"
CLINICAL_GROUPS = (RADIOLOGIST_GROUP, ADMIN_GROUP)


def _roles(user) -> frozenset[str]:
    """The user's clinical roles, read once per request (kept on the user object, which lives
    as long as the request): a page checks the role, and its menu asks again."""
    roles = getattr(user, "_cxr_roles", None)
    if roles is None:
        roles = frozenset(user.groups.filter(name__in=CLINICAL_GROUPS).values_list("name",
                                                                                  flat=True))
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


def _denied(request, message: str) -> PermissionDenied:
    from diagnosis.audit import audit
    from diagnosis.models import AuditEvent

    audit(request, AuditEvent.Action.ACCESS_DENIED, detail={"reason": message})
    return PermissionDenied(message)


def _role_required(check, message: str):
    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not check(request.user):
                raise _denied(request, message)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


# Like login_required, plus the role check: a signed-in user without the role gets a 403 (and
# the attempt is recorded in the audit trail).
clinical_user_required = _role_required(
    is_clinical_user, "Your account has no clinical role. Ask an administrator."
)
model_admin_required = _role_required(
    is_model_admin, "This page is for administrators only."
)


class IsClinicalUser(BasePermission):
    message = "Your account has no clinical role (radiologist or admin). Ask an administrator."

    def has_permission(self, request, view) -> bool:
        if is_clinical_user(request.user):
            return True
        if request.user.is_authenticated:
            _denied(request, self.message)
        return False


class IsModelAdmin(BasePermission):
    message = "Only administrators may do this."

    def has_permission(self, request, view) -> bool:
        if is_model_admin(request.user):
            return True
        if request.user.is_authenticated:
            _denied(request, self.message)
        return False
