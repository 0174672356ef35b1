"""`Authorization: Token KEY` against hashed, expiring tokens (django-rest-knox's scheme)."""

from __future__ import annotations

from functools import lru_cache
from hmac import compare_digest

from django.db.models.expressions import Col
from django.utils import timezone
from knox import auth as knox_auth
from knox.crypto import hash_token
from knox.settings import CONSTANTS
from rest_framework import exceptions

from cxrweb.roles import ADMIN_GROUP, RADIOLOGIST_GROUP


class TokenAuthentication(knox_auth.TokenAuthentication):
    """knox's token authentication, reading the token, its user and the user's roles in one
    query, always fresh (a revoked token or a deactivated user is refused on the next request).

    Unlike knox's own, it does not delete expired tokens while it answers a request (the admin
    lists them; `manage.py revoke_tokens --expired` removes them), and it says that a token has
    expired. The query is built once per process from the models' tables and columns: compiling
    the equivalent ORM query (a join and two EXISTS) on every request was about half the CPU of a
    prediction poll.
    """

    def authenticate_credentials(self, token: bytes):
        from django.contrib.auth import get_user_model
        from django.db import connection

        from cxrweb.apitokens.models import ApiToken

        key = token.decode("latin-1")  # the header's own encoding: never fails
        if not (key.isascii() and key.isprintable()):  # a NUL is an error in PostgreSQL
            raise exceptions.AuthenticationFailed("Invalid token.")
        digest = hash_token(key)
        sql, token_cols, user_cols = _token_user_query()
        with connection.cursor() as cursor:
            cursor.execute(sql, [RADIOLOGIST_GROUP, ADMIN_GROUP, key[: CONSTANTS.TOKEN_KEY_LENGTH]])
            rows = cursor.fetchall()
        n_token = len(token_cols)
        at_digest = next(i for i, col in enumerate(token_cols) if col.target.name == "digest")
        row = next((r for r in rows if compare_digest(digest, r[at_digest])), None)
        if row is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        auth_token = _from_db(ApiToken, token_cols, row[:n_token], connection)
        if auth_token.is_expired:
            raise exceptions.AuthenticationFailed(
                f"Token expired at {timezone.localtime(auth_token.expiry):%Y-%m-%d %H:%M}. "
                "Ask an administrator for a new one."
            )
        n_user = n_token + len(user_cols)
        user = _from_db(get_user_model(), user_cols, row[n_token:n_user], connection)
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        is_radiologist, is_admin = row[n_user:]
        user._cxr_roles = frozenset(
            name
            for name, held in ((RADIOLOGIST_GROUP, is_radiologist), (ADMIN_GROUP, is_admin))
            if held
        )
        auth_token.user = user
        return user, auth_token


def _from_db(model, cols: list[Col], values, connection):
    """The model instance from raw column values, converted as a queryset would (SQLite returns
    datetimes as naive text, for one)."""
    converted = []
    for col, value in zip(cols, values, strict=True):
        for convert in [*connection.ops.get_db_converters(col), *col.get_db_converters(connection)]:
            value = convert(value, col, connection)
        converted.append(value)
    return model.from_db(connection.alias, [col.target.attname for col in cols], converted)


@lru_cache(maxsize=1)
def _token_user_query() -> tuple[str, list[Col], list[Col]]:
    """SELECT the tokens' and their users' concrete fields and two role flags, by token_key."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from cxrweb.apitokens.models import ApiToken

    q = connection.ops.quote_name
    user_model = get_user_model()
    groups = user_model._meta.get_field("groups")
    through = groups.remote_field.through._meta
    group = groups.related_model._meta
    user_col = through.get_field(groups.m2m_field_name()).column
    group_col = through.get_field(groups.m2m_reverse_field_name()).column
    token = ApiToken._meta
    columns = ", ".join(
        [
            *(f"t.{q(f.column)}" for f in token.concrete_fields),
            *(f"u.{q(f.column)}" for f in user_model._meta.concrete_fields),
        ]
    )
    has_role = (
        f"EXISTS (SELECT 1 FROM {q(through.db_table)} ug INNER JOIN {q(group.db_table)} g "
        f"ON g.{q(group.pk.column)} = ug.{q(group_col)} "
        f"WHERE ug.{q(user_col)} = u.{q(user_model._meta.pk.column)} AND g.{q('name')} = %s)"
    )
    sql = (
        f"SELECT {columns}, {has_role}, {has_role} "
        f"FROM {q(token.db_table)} t INNER JOIN {q(user_model._meta.db_table)} u "
        f"ON u.{q(user_model._meta.pk.column)} = t.{q(token.get_field('user').column)} "
        f"WHERE t.{q(token.get_field('token_key').column)} = %s"
    )
    return (
        sql,
        [f.get_col("t") for f in token.concrete_fields],
        [f.get_col("u") for f in user_model._meta.concrete_fields],
    )
