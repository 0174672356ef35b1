"""The API token scheme in the OpenAPI schema (drf-spectacular finds it once this is imported)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "cxrweb.apitokens.auth.TokenAuthentication"
    name = "tokenAuth"
    priority = 1  # over drf-spectacular's own knox scheme, which would match the parent class

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Authorization: Token KEY`; a key from `manage.py create_token USER`. "
            "Tokens expire; an administrator issues a new one.",
        }
