from __future__ import annotations

import re

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from cxrweb.audit.chain import APPEND_ONLY_TABLES


def app_role_grants(role: str) -> list[str]:
    """GRANT statements for a PostgreSQL role that runs the app (web and workers) but does not own
    its tables: every table read and written, except the audit trail and readings, which it may
    only read and append to. Without ownership it cannot TRUNCATE, ALTER or disable triggers."""
    quote = connection.ops.quote_name
    role_q = quote(role)
    tables = sorted(
        {
            model._meta.db_table
            for model in apps.get_models(include_auto_created=True)
            if model._meta.managed and not model._meta.proxy
        }
    )
    statements = [
        f"GRANT CONNECT ON DATABASE {quote(connection.settings_dict['NAME'])} TO {role_q};",
        f"GRANT USAGE ON SCHEMA public TO {role_q};",
    ]
    for table in tables:
        rights = (
            "SELECT, INSERT" if table in APPEND_ONLY_TABLES else "SELECT, INSERT, UPDATE, DELETE"
        )
        statements.append(f"REVOKE ALL ON {quote(table)} FROM {role_q};")
        statements.append(f"GRANT {rights} ON {quote(table)} TO {role_q};")
    statements.append(f"GRANT SELECT ON django_migrations TO {role_q};")  # startup checks
    statements.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role_q};")
    return statements


class Command(BaseCommand):
    help = (
        "Print the GRANT statements that let a PostgreSQL role run the app without owning its "
        "tables (see docs/operations.md). Run them as the owner after every migrate."
    )

    def add_arguments(self, parser):
        parser.add_argument("role", help="the app's login role, e.g. cxr_app")

    def handle(self, *args, role, **options):
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
            raise CommandError(
                "Give a role name of lower-case letters, digits and underscores "
                "(at most 63, not starting with a digit)."
            )
        if connection.vendor != "postgresql":
            raise CommandError(
                f"These grants are for PostgreSQL; DATABASE_URL points at {connection.vendor}."
            )
        self.stdout.write("\n".join(["BEGIN;", *app_role_grants(role), "COMMIT;"]))
