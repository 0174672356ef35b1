from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from cxrweb.apitokens import services


def positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Issue an API token for USER (`Authorization: Token KEY`). The key is printed once, "
        "alone on stdout, and only its digest is stored: keep it now. Revoke it with "
        "`manage.py revoke_tokens`."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--expiry-days",
            type=positive_int,
            default=None,
            metavar="N",
            help=f"days until the token expires (default {settings.CXR_API_TOKEN_TTL_DAYS}, "
            f"CXR_API_TOKEN_TTL_DAYS; at most {settings.CXR_API_TOKEN_MAX_TTL_DAYS}, "
            "CXR_API_TOKEN_MAX_TTL_DAYS)",
        )
        parser.add_argument(
            "--name", default="", metavar="NOTE", help="what the token is for (shown in the admin)"
        )

    def handle(self, *args, username, expiry_days, name, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}. Create one with `create_user`.")
        if not user.is_active:
            raise CommandError(f"User {username!r} is inactive; a token would not work.")
        if len(name) > 100:
            raise CommandError("--name is at most 100 characters.")
        try:
            token, key = services.token_create(
                user=user, expiry_days=expiry_days, name=name, via="manage.py create_token"
            )
        except services.TokenExpiryTooLong as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(key)
        self.stderr.write(
            f"Token {token.pk} for {username!r}, expires {token.expiry:%Y-%m-%d %H:%M %Z}. "
            "The key above is not shown again."
        )
