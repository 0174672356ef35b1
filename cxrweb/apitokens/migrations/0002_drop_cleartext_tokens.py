"""Delete the clear-text keys of rest_framework.authtoken, which this app replaces.

Those tokens stop working with this release anyway (only digests are checked now); dropping the
table removes the keys from the database and from its later backups. Re-issue tokens with
`manage.py create_token`. The recorded authtoken migrations go too, so that re-adding that app
would create its table again.
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("apitokens", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(
            [
                "DROP TABLE IF EXISTS authtoken_token",
                "DELETE FROM django_migrations WHERE app = 'authtoken'",
            ],
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
