"""On PostgreSQL, the database itself refuses UPDATE and DELETE on the audit trail and readings.

(TRUNCATE, used by test teardown and by a DBA's deliberate purge, is not a row trigger.)
SQLite relies on the model and queryset guards.
"""

from django.db import migrations

TABLES = ("diagnosis_auditevent", "diagnosis_reading")

CREATE = """
CREATE OR REPLACE FUNCTION cxr_refuse_change() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION '% rows are append-only: % refused', TG_TABLE_NAME, TG_OP;
END;
$$ LANGUAGE plpgsql;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(CREATE, params=None)
    for table in TABLES:
        schema_editor.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION cxr_refuse_change();"
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};")
    schema_editor.execute("DROP FUNCTION IF EXISTS cxr_refuse_change();")


class Migration(migrations.Migration):
    dependencies = [("diagnosis", "0003_workspace")]
    operations = [migrations.RunPython(forwards, backwards)]
