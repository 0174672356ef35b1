"""The role checks on views and API endpoints: a signed-in user without the role gets a 403, and
the attempt is recorded in the audit trail. The roles themselves are in cxrweb.roles.
"""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

from cxrweb.roles import is_clinical_user, is_model_admin


def _denied(request, message: str) -> PermissionDenied:
    from cxrweb.audit.models import AuditEvent
    from cxrweb.audit.services import audit

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
model_admin_required = _role_required(is_model_admin, "This page is for administrators only.")


class IsClinicalUser(BasePermission):
    message = "Your account has no clinical role (radiologist or admin). Ask an administrator."

    def has_permission(self, request, view) -> bool:
        if is_clinical_user(request.user):
            return True
        if request.user.is_authenticated:
            _denied(request, self.message)
        return False
