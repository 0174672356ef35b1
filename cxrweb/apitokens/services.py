"""Issuing and revoking API tokens; both are audit events."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction

from cxrweb.apitokens.models import ApiToken
from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.db.models import QuerySet


class TokenExpiryTooLong(ValueError):
    """A token asked for with a lifetime over CXR_API_TOKEN_MAX_TTL_DAYS."""


def token_create(
    *,
    user: AbstractBaseUser,
    expiry_days: int | None = None,
    name: str = "",
    actor: AbstractBaseUser | None = None,
    via: str,
    request=None,
) -> tuple[ApiToken, str]:
    """Issue a token for `user`; returns the row and the key, which is not stored anywhere.

    Raises TokenExpiryTooLong when `expiry_days` exceeds CXR_API_TOKEN_MAX_TTL_DAYS."""
    days = expiry_days if expiry_days is not None else settings.CXR_API_TOKEN_TTL_DAYS
    if days > settings.CXR_API_TOKEN_MAX_TTL_DAYS:
        raise TokenExpiryTooLong(
            f"A token may live at most {settings.CXR_API_TOKEN_MAX_TTL_DAYS} days "
            f"(CXR_API_TOKEN_MAX_TTL_DAYS), not {days}: issue a shorter-lived one and renew it."
        )
    with transaction.atomic():
        token, key = ApiToken.objects.create(user=user, expiry=timedelta(days=days), name=name)
        _audit(
            token,
            "created",
            actor=actor,
            via=via,
            request=request,
            expires=token.expiry.isoformat(),
        )
    return token, key


def tokens_revoke(
    *, tokens: QuerySet[ApiToken], actor: AbstractBaseUser | None = None, via: str, request=None
) -> int:
    """Revoke (delete) `tokens`; returns how many there were."""
    with transaction.atomic():
        revoked = list(tokens.select_related("user"))
        for token in revoked:
            _audit(token, "revoked", actor=actor, via=via, request=request)
        ApiToken.objects.filter(pk__in=[t.pk for t in revoked]).delete()
    return len(revoked)


def _audit(token: ApiToken, what: str, *, actor, via: str, request, **extra) -> None:
    action = (
        AuditEvent.Action.TOKEN_CREATED if what == "created" else AuditEvent.Action.TOKEN_REVOKED
    )
    audit(
        request,
        action,
        token,
        user=actor,
        detail={
            "token_id": token.pk,
            "owner": token.user.get_username(),
            "name": token.name,
            "via": via,
            **extra,
        },
    )
