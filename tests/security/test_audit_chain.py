"""Tamper evidence: the audit trail is a hash chain that `manage.py verify_audit` checks, and the
database itself refuses UPDATE and DELETE on audit events and readings (SQLite included).

The suite runs on PostgreSQL, so the SQLite triggers are tested on a SQLite file migrated by
`manage.py migrate` in a subprocess, and attacked with the sqlite3 module, as someone with access
to the file would."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import RequestFactory

from cxrweb.audit.chain import CHAINED_FIELDS, GENESIS, link_hash, verify_chain
from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit
from tests.conftest import REPO

# Events as hostile clients and odd requests make them: IPv6, non-ASCII, control characters,
# nested detail whose key order a jsonb column does not keep.
EVENTS = """
from django.test import RequestFactory
from cxrweb.audit.services import audit
from cxrweb.audit.models import AuditEvent
from diagnosis.models import Patient, Reading, Study
from django.contrib.auth.models import User

rf = RequestFactory()
user = User.objects.create_user("rad", password="pw-long-enough-1")
patient = Patient.objects.create(mrn="=HYPERLINK(1)", name="Zoë")
study = Study.objects.create(patient=patient, accession_number="ACC\\u00e9 1")
Reading.objects.create(study=study, radiologist=user, final_label="normal")
for i, (ip, agent) in enumerate([("127.0.0.1", "curl"), ("::1", "Mozilla \\u2603"),
                                 ("::ffff:10.0.0.1", "tab\\there"), ("2001:db8::1", ""),
                                 ("10.1.2.3", "=cmd|' /C calc'!A0")]):
    request = rf.get(f"/studies/{study.pk}/?n={i}", REMOTE_ADDR=ip, HTTP_USER_AGENT=agent)
    request.user = user
    audit(request, AuditEvent.Action.VIEW_STUDY, study,
          detail={"z": [1, 2.5, None], "a": {"y": "\\u00fc", "b": True}, "n": i})
print(AuditEvent.objects.count())
"""


def _env(db_file: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db_file}",
        "PYTHONPATH": str(REPO),
        "DJANGO_SETTINGS_MODULE": "cxrweb.settings",
        "SECRET_KEY": "test-only",
    }


def _manage(db_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=_env(db_file),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def migrated_sqlite(tmp_path_factory) -> Path:
    """A SQLite database migrated by `manage.py migrate`, with a reading and five audit events
    written by the app; each test gets a copy."""
    db_file = tmp_path_factory.mktemp("sqlite") / "db.sqlite3"
    migrate = _manage(db_file, "migrate", "--no-input", "-v", "0")
    assert migrate.returncode == 0, migrate.stderr
    script = "import django; django.setup()\n" + EVENTS
    made = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=_env(db_file),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "5"
    return db_file


@pytest.fixture
def sqlite_db(migrated_sqlite, tmp_path) -> Path:
    copy = tmp_path / "db.sqlite3"
    copy.write_bytes(migrated_sqlite.read_bytes())
    return copy


@pytest.mark.parametrize("table", ["diagnosis_auditevent", "diagnosis_reading"])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {table} SET id = id",
        "UPDATE {table} SET id = id + 1000 WHERE id = (SELECT max(id) FROM {table})",
        "DELETE FROM {table}",
        "DELETE FROM {table} WHERE id = (SELECT min(id) FROM {table})",
    ],
)
def test_sqlite_refuses_raw_updates_and_deletes_of_audit_events_and_readings(
    sqlite_db, table, statement
):
    db = sqlite3.connect(sqlite_db)
    before = db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    assert before
    with pytest.raises(sqlite3.DatabaseError, match=f"{table} rows are append-only"):
        db.execute(statement.format(table=table))
    db.commit()
    assert db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall() == before


def test_a_fresh_sqlite_chain_verifies(sqlite_db):
    result = _manage(sqlite_db, "verify_audit")
    assert result.returncode == 0, result.stderr
    assert "Audit chain intact: 5 event(s)" in result.stdout
    head = (
        sqlite3.connect(sqlite_db)
        .execute("SELECT hash FROM diagnosis_auditevent ORDER BY id DESC LIMIT 1")
        .fetchone()[0]
    )
    assert f"head {head}" in result.stdout
    assert _manage(sqlite_db, "verify_audit", "--head", head).returncode == 0


def _attack(db_file: Path, *statements: str) -> None:
    """As someone with write access to the file: drop the triggers first, then edit."""
    db = sqlite3.connect(db_file)
    db.execute("DROP TRIGGER diagnosis_auditevent_no_update")
    db.execute("DROP TRIGGER diagnosis_auditevent_no_delete")
    for statement in statements:
        db.execute(statement)
    db.commit()


def _ids(db_file: Path) -> list[int]:
    rows = sqlite3.connect(db_file).execute("SELECT id FROM diagnosis_auditevent ORDER BY id")
    return [row[0] for row in rows]


@pytest.mark.parametrize(
    "attack, named, problem",
    [
        (
            "UPDATE diagnosis_auditevent SET patient_mrn = 'someone-else' WHERE id = {e3}",
            "e3",
            "its contents do not match its hash",
        ),
        (
            "UPDATE diagnosis_auditevent SET ip_address = '10.9.9.9' WHERE id = {e5}",
            "e5",
            "its contents do not match its hash",
        ),
        (
            "UPDATE diagnosis_auditevent SET detail = '{{}}' WHERE id = {e2}",
            "e2",
            "its contents do not match its hash",
        ),
        (
            "UPDATE diagnosis_auditevent SET at = '2020-01-01 00:00:00' WHERE id = {e4}",
            "e4",
            "its contents do not match its hash",
        ),
        (
            "DELETE FROM diagnosis_auditevent WHERE id = {e3}",
            "e4",
            "it does not link to event {e2}",
        ),
        ("DELETE FROM diagnosis_auditevent WHERE id = {e1}", "e2", "it does not start the chain"),
    ],
)
def test_verify_audit_names_the_first_event_an_attacker_changed_or_removed(
    sqlite_db, attack, named, problem
):
    ids = dict(zip(("e1", "e2", "e3", "e4", "e5"), _ids(sqlite_db), strict=True))
    _attack(sqlite_db, attack.format(**ids))
    result = _manage(sqlite_db, "verify_audit")
    assert result.returncode != 0
    assert f"Audit chain broken at event {ids[named]}: {problem.format(**ids)}" in result.stderr
    assert (
        "Append-only triggers missing or disabled: diagnosis_auditevent_no_update" in result.stderr
    )


def test_an_event_rewritten_with_a_recomputed_hash_breaks_the_next_link(sqlite_db):
    e1, e2, e3, e4, _ = _ids(sqlite_db)
    _attack(sqlite_db, f"UPDATE diagnosis_auditevent SET username = 'nobody' WHERE id = {e3}")
    # The attacker recomputes the changed event's own hash; the next event still holds the old one.
    db = sqlite3.connect(sqlite_db)
    rows = _manage(
        sqlite_db,
        "shell",
        "-c",
        (
            "from cxrweb.audit.models import AuditEvent\n"
            "from cxrweb.audit.chain import chain_values, link_hash\n"
            f"e = AuditEvent.objects.get(pk={e3})\n"
            "print(link_hash(e.prev_hash, chain_values(e)))"
        ),
    )
    assert rows.returncode == 0, rows.stderr
    forged = rows.stdout.split()[-1]
    db.execute("UPDATE diagnosis_auditevent SET hash = ? WHERE id = ?", (forged, e3))
    db.commit()
    result = _manage(sqlite_db, "verify_audit")
    assert result.returncode != 0
    assert f"Audit chain broken at event {e4}: it does not link to event {e3}" in result.stderr


def test_verify_audit_notices_the_newest_events_cut_off_given_the_head_it_printed(sqlite_db):
    head = _manage(sqlite_db, "verify_audit").stdout.split("head ")[1].split(".")[0]
    _attack(sqlite_db, f"DELETE FROM diagnosis_auditevent WHERE id = {_ids(sqlite_db)[-1]}")
    db = sqlite3.connect(sqlite_db)
    for name, op in (("no_update", "UPDATE"), ("no_delete", "DELETE")):  # triggers put back
        db.execute(
            f"CREATE TRIGGER diagnosis_auditevent_{name} BEFORE {op} ON "
            "diagnosis_auditevent BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
    db.commit()
    assert _manage(sqlite_db, "verify_audit").returncode == 0  # the chain alone cannot tell
    result = _manage(sqlite_db, "verify_audit", "--head", head)
    assert result.returncode != 0
    assert f"The chain no longer holds the head {head}" in result.stderr


# On the suite's database (PostgreSQL under `make test`)


def _request(ip: str, agent: str):
    request = RequestFactory().get("/audit/?x=1", REMOTE_ADDR=ip, HTTP_USER_AGENT=agent)
    request.user = None
    return request


def test_events_the_app_writes_link_to_the_one_before_and_verify(radiologist):
    first = audit(
        _request("::ffff:192.0.2.1", "Zoë \u2603"), AuditEvent.Action.LOGIN, user=radiologist
    )
    second = audit(
        _request("2001:DB8:0:0::1", "x"),
        AuditEvent.Action.VIEW_STUDY,
        user=radiologist,
        detail={"b": [1.5, {"z": 1, "a": None}], "a": "\u00fc"},
    )
    third = AuditEvent.objects.create(action="logout", username="x")
    assert first.prev_hash == GENESIS
    assert (second.prev_hash, third.prev_hash) == (first.hash, second.hash)
    stored = AuditEvent.objects.get(pk=second.pk)  # as the database gives it back
    assert (
        link_hash(stored.prev_hash, {f: getattr(stored, f) for f in CHAINED_FIELDS}) == stored.hash
    )
    report = verify_chain(AuditEvent.objects.order_by("pk").values())
    assert (report.intact, report.events, report.head) == (True, 3, third.hash)


def test_audit_events_cannot_be_bulk_created_unchained(db):
    with pytest.raises(ValueError, match="chained"):
        AuditEvent.objects.bulk_create([AuditEvent(action="login")])
    assert not AuditEvent.objects.exists()


def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's case (the SQLite file above covers SQLite's)")


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_never_fork_the_chain():
    _postgresql_only()
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(15):
                assert audit(None, AuditEvent.Action.VIEW_STUDY, detail={"w": n, "i": i})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    links = list(AuditEvent.objects.values_list("prev_hash", flat=True))
    assert len(links) == 120 and len(set(links)) == 120  # no two events share a predecessor
    call_command("verify_audit")


def test_verify_audit_fails_when_the_database_lost_its_triggers(db):
    _postgresql_only()
    audit(None, AuditEvent.Action.LOGIN)
    call_command("verify_audit")
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE diagnosis_reading DISABLE TRIGGER diagnosis_reading_append_only"
        )
    with pytest.raises(CommandError, match="no longer protects it"):
        call_command("verify_audit")


def test_events_written_before_the_chain_existed_are_chained_by_the_migration(tmp_path):
    db_file = tmp_path / "old.sqlite3"
    assert _manage(db_file, "migrate", "diagnosis", "0006", "-v", "0").returncode == 0
    db = sqlite3.connect(db_file)
    for i, ip in enumerate(["127.0.0.1", None, "::1"]):
        db.execute(
            "INSERT INTO diagnosis_auditevent (at, username, action, object_type, object_id, "
            "patient_mrn, ip_address, user_agent, path, detail) "
            "VALUES (?, 'old', 'login', '', '', 'MRN', ?, 'ua', '/', ?)",
            (f"2025-01-0{i + 1} 10:00:00.123456", ip, '{"b": 1, "a": [2]}'),
        )
    db.commit()
    migrate = _manage(db_file, "migrate", "-v", "0")
    assert migrate.returncode == 0, migrate.stderr
    result = _manage(db_file, "verify_audit")
    assert result.returncode == 0, result.stderr
    assert "Audit chain intact: 3 event(s)" in result.stdout
