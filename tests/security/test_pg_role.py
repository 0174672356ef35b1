"""The app runs under a PostgreSQL role that does not own its tables (docs/operations.md): it
appends to the audit trail and readings, and cannot change, delete, truncate them or switch
their triggers off. The grants are the ones `manage.py pg_app_role_sql ROLE` prints."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from tests.conftest import REPO

psycopg = pytest.importorskip("psycopg")

APP_WRITES = """
import django; django.setup()
from django.contrib.auth.models import User
from django.core.management import call_command
from cxrweb.audit.services import audit
from cxrweb.audit.models import AuditEvent
from diagnosis.models import Patient, Reading, Study
user = User.objects.create_user("rad-under-role", password="pw-long-enough-1")
study = Study.objects.create(patient=Patient.objects.create(mrn="ROLE-1"), accession_number="R1")
Reading.objects.create(study=study, radiologist=user, final_label="normal")
assert audit(None, AuditEvent.Action.READING, study, user=user) is not None
assert audit(None, AuditEvent.Action.LOGOUT, user=user) is not None
study.priority = 2
study.save()  # the role may change ordinary rows
call_command("verify_audit")
print(AuditEvent.objects.count(), Reading.objects.count())
"""

REFUSED = [
    "UPDATE diagnosis_auditevent SET username = 'x'",
    "DELETE FROM diagnosis_auditevent",
    "TRUNCATE diagnosis_auditevent",
    "ALTER TABLE diagnosis_auditevent DISABLE TRIGGER diagnosis_auditevent_append_only",
    "ALTER TABLE diagnosis_auditevent DISABLE TRIGGER ALL",
    "DROP TRIGGER diagnosis_auditevent_append_only ON diagnosis_auditevent",
    "UPDATE diagnosis_reading SET final_label = 'x'",
    "DELETE FROM diagnosis_reading",
    "TRUNCATE diagnosis_reading",
    "ALTER TABLE diagnosis_reading DISABLE TRIGGER diagnosis_reading_append_only",
    "DROP TABLE diagnosis_auditevent",
]


def _params(**changes) -> dict:
    s = connection.settings_dict
    return {
        "host": s["HOST"] or "127.0.0.1",
        "port": s["PORT"] or 5432,
        "dbname": s["NAME"],
        "user": s["USER"],
        "password": s["PASSWORD"],
        **changes,
    }


@pytest.fixture
def app_role(transactional_db) -> Iterator[tuple[str, str]]:
    """A login role `cxr_app_<random>` with the printed grants; dropped afterwards."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL roles: DATABASE_URL is not PostgreSQL (`make test` runs it)")
    role, password = f"cxr_app_{secrets.token_hex(4)}", secrets.token_urlsafe(18)
    out = io.StringIO()
    call_command("pg_app_role_sql", role, stdout=out)
    owner = psycopg.connect(**_params(), autocommit=True)
    try:
        owner.execute(
            psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                psycopg.sql.Identifier(role), psycopg.sql.Literal(password)
            )
        )
    except psycopg.errors.InsufficientPrivilege:
        owner.close()
        pytest.skip("the test database's user may not create roles")
    try:
        with owner.transaction():
            for statement in out.getvalue().splitlines():
                if statement not in ("BEGIN;", "COMMIT;"):
                    owner.execute(statement)
        yield role, password
    finally:
        owner.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(psycopg.sql.Identifier(role)))
        owner.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(role)))
        owner.close()


def test_the_app_runs_under_the_role_and_appends_to_the_trail(app_role):
    role, password = app_role
    p = _params(user=role, password=password)
    url = f"postgres://{role}:{password}@{p['host']}:{p['port']}/{p['dbname']}"
    result = subprocess.run(
        [sys.executable, "-c", APP_WRITES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "DATABASE_URL": url,
            "PYTHONPATH": str(REPO),
            "DJANGO_SETTINGS_MODULE": "cxrweb.settings",
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["2", "1"]
    assert "Audit chain intact: 2 event(s)" in result.stdout


@pytest.mark.parametrize("statement", REFUSED)
def test_the_role_cannot_change_delete_truncate_or_unprotect_the_trail(app_role, statement):
    role, password = app_role
    with psycopg.connect(**_params(user=role, password=password), autocommit=True) as app:
        app.execute("SELECT count(*) FROM diagnosis_auditevent")  # it may read
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute(statement)


def test_the_grants_command_refuses_a_role_name_that_is_not_a_plain_identifier(db):
    with pytest.raises(CommandError, match="role name"):
        call_command("pg_app_role_sql", 'x"; DROP TABLE diagnosis_auditevent; --')
