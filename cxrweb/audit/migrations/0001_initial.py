"""The audit trail's model, moved here from the diagnosis app (diagnosis 0011) with its table
(diagnosis_auditevent), its rows, triggers and hash chain untouched: the model is created in this
app's state only. Its content type moves too, so that its permissions (and the admin's log entries)
stay attached to it."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


def _move_content_type(apps, schema_editor, old_label, new_label):
    ContentType = apps.get_model('contenttypes', 'ContentType')
    db = schema_editor.connection.alias
    types = ContentType.objects.using(db)
    if not types.filter(app_label=new_label, model='auditevent').exists():
        types.filter(app_label=old_label, model='auditevent').update(app_label=new_label)


def content_type_to_audit(apps, schema_editor):
    _move_content_type(apps, schema_editor, 'diagnosis', 'audit')


def content_type_to_diagnosis(apps, schema_editor):
    _move_content_type(apps, schema_editor, 'audit', 'diagnosis')


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('contenttypes', '0002_remove_content_type_name'),
        ('diagnosis', '0011_auditevent_to_audit_app'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AuditEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('at', models.DateTimeField(db_index=True, default=django.utils.timezone.now, editable=False)),
                        ('username', models.CharField(blank=True, help_text='Kept if the user is deleted.', max_length=150)),
                        ('action', models.CharField(choices=[('view_study', 'Viewed a study'), ('view_image', 'Viewed an image'), ('upload', 'Uploaded an image'), ('upload_rejected', 'Upload rejected'), ('reading', 'Signed a reading'), ('download', 'Downloaded a file'), ('report', 'Opened a report'), ('promote', 'Promoted a model version'), ('train', 'Started a training run'), ('login', 'Signed in'), ('login_failed', 'Failed sign-in'), ('logout', 'Signed out'), ('access_denied', 'Access denied'), ('export', 'Exported the audit trail'), ('identity_confirmed', 'Confirmed a patient despite other details'), ('patient_edited', "Edited a patient's identity"), ('token_created', 'Issued an API token'), ('token_revoked', 'Revoked an API token'), ('view_admin', 'Viewed patient data in the admin'), ('reanalyse', 'Queued a re-analysis')], db_index=True, max_length=24)),
                        ('object_type', models.CharField(blank=True, max_length=40)),
                        ('object_id', models.CharField(blank=True, max_length=64)),
                        ('patient_mrn', models.CharField(blank=True, db_index=True, max_length=64)),
                        ('ip_address', models.GenericIPAddressField(blank=True, null=True)),
                        ('user_agent', models.CharField(blank=True, max_length=300)),
                        ('path', models.CharField(blank=True, max_length=300)),
                        ('detail', models.JSONField(blank=True, default=dict)),
                        ('prev_hash', models.CharField(blank=True, editable=False, max_length=64)),
                        ('hash', models.CharField(blank=True, editable=False, max_length=64)),
                        ('user', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'diagnosis_auditevent',
                        'ordering': ['-at'],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_to_audit, content_type_to_diagnosis),
    ]
