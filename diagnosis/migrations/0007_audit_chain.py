"""Chain the audit trail (cxrweb.audit.chain) and make SQLite refuse UPDATE and DELETE on the
audit trail and readings, as PostgreSQL has since 0004.

Events written before this migration are chained here, in id order.
"""

import django.utils.timezone
from django.db import migrations, models

from cxrweb.audit import chain as audit_chain

PG_TRIGGER = "diagnosis_auditevent_append_only"


def chain_existing(apps, schema_editor):
    AuditEvent = apps.get_model("diagnosis", "AuditEvent")
    db = schema_editor.connection.alias
    pg = schema_editor.connection.vendor == "postgresql"
    if pg:  # the owner may; the app's role (docs/operations.md) may not
        schema_editor.execute(f"ALTER TABLE diagnosis_auditevent DISABLE TRIGGER {PG_TRIGGER}")
    prev = audit_chain.GENESIS
    for event in AuditEvent.objects.using(db).order_by("pk").iterator(chunk_size=2000):
        digest = audit_chain.link_hash(prev, audit_chain.chain_values(event))
        AuditEvent.objects.using(db).filter(pk=event.pk).update(prev_hash=prev, hash=digest)
        prev = digest
    if pg:
        schema_editor.execute(f"ALTER TABLE diagnosis_auditevent ENABLE TRIGGER {PG_TRIGGER}")


def sqlite_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in audit_chain.sqlite_create_triggers_sql():
            schema_editor.execute(sql)


def drop_sqlite_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in audit_chain.sqlite_drop_triggers_sql():
            schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("diagnosis", "0006_display_may_be_jpeg")]
    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="at",
            field=models.DateTimeField(db_index=True, default=django.utils.timezone.now,
                                       editable=False),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        # The actions added for identity safety (issue #20, item 4): choices only, no SQL.
        migrations.AlterField(
            model_name="auditevent",
            name="action",
            field=models.CharField(choices=[
                ("view_study", "Viewed a study"), ("view_image", "Viewed an image"),
                ("upload", "Uploaded an image"), ("upload_rejected", "Upload rejected"),
                ("reading", "Signed a reading"), ("download", "Downloaded a file"),
                ("report", "Opened a report"), ("promote", "Promoted a model version"),
                ("train", "Started a training run"), ("login", "Signed in"),
                ("login_failed", "Failed sign-in"), ("logout", "Signed out"),
                ("access_denied", "Access denied"), ("export", "Exported the audit trail"),
                ("identity_confirmed", "Confirmed a patient despite other details"),
                ("patient_edited", "Edited a patient's identity"),
            ], db_index=True, max_length=24),
        ),
        migrations.RunPython(chain_existing, migrations.RunPython.noop),
        migrations.RunPython(sqlite_triggers, drop_sqlite_triggers),
    ]
