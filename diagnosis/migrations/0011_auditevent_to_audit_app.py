"""AuditEvent moves to the audit app (cxrweb.audit). Its table stays diagnosis_auditevent: this
removes the model from diagnosis's state only, and audit 0001 adds it to the audit app's state
(and moves its content type)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('diagnosis', '0010_reanalyse_audit'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='AuditEvent')],
            database_operations=[],
        ),
    ]
