from __future__ import annotations

from django.contrib import admin, messages

from cxrweb.admin_base import ReadOnlyAdmin
from cxrweb.apitokens import services
from cxrweb.apitokens.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    """Lists tokens (never a key: only its first characters are stored) and revokes them.

    Tokens are not made here: `manage.py create_token` prints the key once, where a page
    would have to carry it through a redirect (the messages cookie) to show it. Nor are they
    deleted or edited: Django's delete would skip the audit trail, and revoking is the action.
    """

    list_display = ("id", "user", "name", "token_key", "created", "expiry", "expired")
    list_select_related = ("user",)
    list_filter = ("created", "expiry")
    search_fields = ("user__username", "name", "token_key")
    fields = ("user", "name", "token_key", "created", "expiry")
    readonly_fields = fields
    actions = ["revoke_selected"]

    @admin.display(boolean=True)
    def expired(self, token: ApiToken) -> bool:
        return token.is_expired

    def has_revoke_permission(self, request) -> bool:
        return request.user.has_perm("apitokens.delete_apitoken")

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_selected(self, request, queryset) -> None:
        count = services.tokens_revoke(
            tokens=queryset, actor=request.user, via="admin", request=request
        )
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)
