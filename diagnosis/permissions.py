"""Who may use the clinical side of the app.

Roles are Django groups: `radiologist` (upload, view, review) and `admin` (also models and
training). Superusers count as admins. Anyone else is refused, server-side, everywhere.
"""

from __future__ import annotations

from functools import lru_cache, wraps
from typing import TYPE_CHECKING

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from rest_framework import authentication, exceptions
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


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, reading the token, its user and the user's roles in one
    query, always fresh (a revoked token or a deactivated user is refused on the next request).

    The query is built once per process from the models' tables and columns: compiling the
    equivalent ORM query (a join and two EXISTS) on every request was about half the CPU of a
    prediction poll.
    """

    def authenticate_credentials(self, key):
        from django.contrib.auth import get_user_model
        from django.db import connection

        sql, fields = _token_user_query()
        with connection.cursor() as cursor:
            cursor.execute(sql, [RADIOLOGIST_GROUP, ADMIN_GROUP, key])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        user_model = get_user_model()
        user = user_model.from_db(connection.alias, fields, row[: len(fields)])
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        is_radiologist, is_admin, created = row[len(fields):]
        user._cxr_roles = frozenset(
            name for name, held in ((RADIOLOGIST_GROUP, is_radiologist), (ADMIN_GROUP, is_admin))
            if held
        )
        token = self.get_model()(key=key, user=user, created=created)
        token._state.adding, token._state.db = False, connection.alias
        return user, token


@lru_cache(maxsize=1)
def _token_user_query() -> tuple[str, list[str]]:
    """SELECT the user's concrete fields, two role flags and the token's creation time by key."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.authtoken.models import Token

    q = connection.ops.quote_name
    user_model = get_user_model()
    groups = user_model._meta.get_field("groups")
    through = groups.remote_field.through._meta
    group = groups.related_model._meta
    user_col = through.get_field(groups.m2m_field_name()).column
    group_col = through.get_field(groups.m2m_reverse_field_name()).column
    fields = [f.attname for f in user_model._meta.concrete_fields]
    columns = ", ".join(f"u.{q(f.column)}" for f in user_model._meta.concrete_fields)
    has_role = (
        f"EXISTS (SELECT 1 FROM {q(through.db_table)} ug INNER JOIN {q(group.db_table)} g "
        f"ON g.{q(group.pk.column)} = ug.{q(group_col)} "
        f"WHERE ug.{q(user_col)} = u.{q(user_model._meta.pk.column)} AND g.{q('name')} = %s)"
    )
    token = Token._meta
    sql = (
        f"SELECT {columns}, {has_role}, {has_role}, t.{q(token.get_field('created').column)} "
        f"FROM {q(token.db_table)} t INNER JOIN {q(user_model._meta.db_table)} u "
        f"ON u.{q(user_model._meta.pk.column)} = t.{q(token.get_field('user').column)} "
        f"WHERE t.{q(token.pk.column)} = %s"
    )
    return sql, fields


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
