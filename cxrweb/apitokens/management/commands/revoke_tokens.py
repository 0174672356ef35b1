from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from knox.settings import CONSTANTS

from cxrweb.apitokens import services
from cxrweb.apitokens.models import ApiToken


class Command(BaseCommand):
    help = (
        "Revoke API tokens: all of USER's (--all), one by id (--id, shown in the admin) or by "
        "the key's first characters (--prefix), or every expired token (--expired)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", nargs="?")
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--all", action="store_true", dest="all_tokens", help="all of USER's tokens"
        )
        which.add_argument("--id", type=int, dest="token_id", help="the token with this id")
        which.add_argument("--prefix", help="the token whose key starts with this (8+ chars)")
        which.add_argument(
            "--expired", action="store_true", help="every expired token, of any user"
        )

    def handle(self, *args, username, all_tokens, token_id, prefix, expired, **options):
        tokens = ApiToken.objects.all()
        if expired:
            tokens = tokens.filter(expiry__lte=timezone.now())
        elif username is None:
            raise CommandError("Name the USER whose tokens to revoke (or use --expired).")
        else:
            user = get_user_model().objects.filter(username=username).first()
            if user is None:
                raise CommandError(f"No user named {username!r}.")
            tokens = tokens.filter(user=user)
            if token_id is not None:
                tokens = tokens.filter(pk=token_id)
            elif prefix is not None:
                tokens = self._by_prefix(tokens, prefix)
        count = services.tokens_revoke(tokens=tokens, via="manage.py revoke_tokens")
        if count == 0 and not (all_tokens or expired):
            raise CommandError("No such token of that user; nothing was revoked.")
        self.stdout.write(self.style.SUCCESS(f"Revoked {count} token(s)."))

    @staticmethod
    def _by_prefix(tokens, prefix: str):
        if len(prefix) < 8:
            raise CommandError("Give at least 8 characters of the key with --prefix.")
        # Only a key's first TOKEN_KEY_LENGTH characters are stored: a longer prefix is cut.
        tokens = tokens.filter(token_key__startswith=prefix[: CONSTANTS.TOKEN_KEY_LENGTH])
        if len(tokens[:2]) > 1:
            raise CommandError(f"{prefix!r} starts more than one token; use --id.")
        return tokens
