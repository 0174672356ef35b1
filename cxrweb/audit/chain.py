"""The audit trail's hash chain and the database's append-only triggers.

Each audit event stores `prev_hash` (the previous event's hash) and `hash`, the sha256 of
`prev_hash` and the event's canonical form. Changing, removing or inserting an event breaks the
chain at that point, and `manage.py verify_audit` names the first broken link. Appends are
serialised (`append_lock`), so that concurrent web and worker processes never link two events to
the same predecessor. The chain cannot show that the newest events were cut off: note the head
hash that verify_audit prints, and compare later.

No Django model is imported here: the data migration that chains older events (diagnosis 0007)
uses it too. The readings table (diagnosis_reading) is append-only in the same way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

GENESIS = ""  # the prev_hash of the first event
CHAINED_FIELDS = (
    "at",
    "user_id",
    "username",
    "action",
    "object_type",
    "object_id",
    "patient_mrn",
    "ip_address",
    "user_agent",
    "path",
    "detail",
)
APPEND_ONLY_TABLES = ("diagnosis_auditevent", "diagnosis_reading")
# pg_advisory_xact_lock key: any constant no other code uses ("cxra" in ASCII).
PG_LOCK_KEY = 0x63787261


def chain_values(instance) -> dict:
    """An event's chained fields as the database will give them back (so that the hash computed
    before the insert matches the one recomputed from the stored row)."""
    values = {}
    for name in CHAINED_FIELDS:
        field = instance._meta.get_field("user" if name == "user_id" else name)
        value = getattr(instance, field.attname)
        if name == "ip_address":
            value = field.get_prep_value(value) or None  # "" is stored as NULL
        elif name != "detail":
            value = field.to_python(value)
        values[name] = value
    return values


def canonical(values: Mapping) -> str:
    """A stable text of an event's chained fields: sorted JSON keys, timestamps in UTC ISO 8601."""
    out = {}
    for name in CHAINED_FIELDS:
        value = values[name]
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC).isoformat()
        out[name] = value
    return json.dumps(out, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def link_hash(prev_hash: str, values: Mapping) -> str:
    return hashlib.sha256(f"{prev_hash}\n{canonical(values)}".encode()).hexdigest()


def append_lock(connection) -> None:
    """Serialise appends until the surrounding transaction ends. SQLite needs nothing more: the
    app's transactions begin IMMEDIATE, which takes the database's single write lock."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PG_LOCK_KEY])


@dataclass(frozen=True)
class ChainReport:
    events: int  # events checked (up to and including a broken one)
    head: str  # the hash of the last intact event
    broken_event: int | None = None
    problem: str = ""

    @property
    def intact(self) -> bool:
        return self.broken_event is None


def verify_chain(rows: Iterable[Mapping]) -> ChainReport:
    """Walk events in insertion (id) order; each row has `id`, `prev_hash`, `hash` and the
    chained fields. Stops at the first broken link."""
    prev_hash, prev_id, count = GENESIS, None, 0
    for row in rows:
        count += 1
        if row["prev_hash"] != prev_hash:
            if prev_id is None:
                problem = (
                    "it does not start the chain: the events before it were removed "
                    "(or it was inserted)"
                )
            else:
                problem = (
                    f"it does not link to event {prev_id}, the event before it: event "
                    f"{prev_id} was changed, or events between them were removed or "
                    "inserted"
                )
            return ChainReport(count, prev_hash, row["id"], problem)
        if link_hash(prev_hash, row) != row["hash"]:
            return ChainReport(
                count,
                prev_hash,
                row["id"],
                "its contents do not match its hash: it was changed after it was written",
            )
        prev_hash, prev_id = row["hash"], row["id"]
    return ChainReport(count, prev_hash)


# SQLite: the database refuses UPDATE and DELETE on these tables, as PostgreSQL does since
# diagnosis migration 0004 (whose row triggers leave TRUNCATE to the database owner). SQLite
# applies most schema changes by rebuilding the table, which drops its triggers: a migration that
# changes one of these tables' columns must create them again (as diagnosis 0009 does);
# verify_audit reports them missing.


def sqlite_trigger_names() -> list[str]:
    return [
        f"{table}_no_{op.lower()}" for table in APPEND_ONLY_TABLES for op in ("UPDATE", "DELETE")
    ]


def sqlite_create_triggers_sql() -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} rows are append-only: {op} refused'); END;"
        for table in APPEND_ONLY_TABLES
        for op in ("UPDATE", "DELETE")
    ]


def sqlite_drop_triggers_sql() -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {name};" for name in sqlite_trigger_names()]


def missing_triggers(connection) -> list[str]:
    """The append-only triggers this database lacks (dropped, or lost when a migration rebuilt a
    SQLite table)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            expected = sqlite_trigger_names()
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            present = {name for (name,) in cursor.fetchall()}
        elif connection.vendor == "postgresql":
            expected = [f"{table}_append_only" for table in APPEND_ONLY_TABLES]
            # tgenabled 'D': disabled with ALTER TABLE ... DISABLE TRIGGER.
            cursor.execute(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled <> 'D'"
            )
            present = {name for (name,) in cursor.fetchall()}
        else:
            return []
    return [name for name in expected if name not in present]
