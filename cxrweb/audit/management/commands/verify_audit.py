from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from cxrweb.audit.chain import CHAINED_FIELDS, missing_triggers, verify_chain
from cxrweb.audit.models import AuditEvent


class Command(BaseCommand):
    help = (
        "Walk the audit trail's hash chain and name the first broken link (an event changed, "
        "removed or inserted behind the app's back); also check that the database's "
        "append-only triggers are in place. Exits non-zero on any problem."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--head",
            metavar="HASH",
            help="a head hash printed by an earlier run: fail unless the chain still holds it "
            "(the chain alone cannot show that its newest events were cut off)",
        )

    def handle(self, *args, head=None, **options):
        rows = (
            AuditEvent.objects.order_by("pk")
            .values("id", "prev_hash", "hash", *CHAINED_FIELDS)
            .iterator(chunk_size=2000)
        )
        seen_head = False

        def watched():
            nonlocal seen_head
            for row in rows:
                seen_head = seen_head or row["hash"] == head
                yield row

        try:
            report = verify_chain(watched())
        finally:
            rows.close()  # stopped at a break: release the database cursor now
        missing = missing_triggers(connection)
        if missing:
            self.stderr.write(
                f"Append-only triggers missing or disabled: {', '.join(missing)}. "
                "Someone with the database owner's rights removed them; "
                "docs/operations.md says how to put them back."
            )
        if not report.intact:
            raise CommandError(
                f"Audit chain broken at event {report.broken_event}: {report.problem}. "
                f"{report.events - 1} event(s) before it are intact."
            )
        if head and not seen_head:
            raise CommandError(
                f"The chain no longer holds the head {head}: events were removed "
                "from its end (or the hash was mistyped)."
            )
        if missing:
            raise CommandError("The chain is intact, but the database no longer protects it.")
        self.stdout.write(
            self.style.SUCCESS(
                f"Audit chain intact: {report.events} event(s); head {report.head or '(empty)'}. "
                "Keep the head somewhere else and pass it as --head to a later run."
            )
        )
