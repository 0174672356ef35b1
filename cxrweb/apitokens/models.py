"""API tokens: django-rest-knox's token, with a short id, a note and a required expiry.

Only the key's digest (sha512) and its first characters (`token_key`, to find the row) are
stored; the key itself is shown once, when `manage.py create_token` makes it. Revoking a token
deletes its row (the audit trail keeps the event).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from knox.models import AbstractAuthToken
from knox.settings import CONSTANTS


class ApiToken(AbstractAuthToken):
    # knox keys its table by the digest; a short id is what the admin, the audit trail and
    # `revoke_tokens --id` can name without quoting a 128-character digest.
    id = models.BigAutoField(primary_key=True)
    digest = models.CharField(max_length=CONSTANTS.DIGEST_LENGTH, unique=True)
    expiry = models.DateTimeField(help_text="The token stops working at this time.")
    name = models.CharField(
        max_length=100, blank=True, help_text="What the token is for (a client, a script)."
    )

    class Meta:
        ordering = ["-created"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"token {self.pk} of {self.user}" + (f" ({self.name})" if self.name else "")

    @property
    def is_expired(self) -> bool:
        return self.expiry <= timezone.now()
