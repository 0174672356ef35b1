from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0005_ood_reference"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelpromotion",
            name="external_evaluations",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="the done evaluations on other data at promotion: dataset, split, n, "
                "figures",
            ),
        ),
        migrations.AddField(
            model_name="modelpromotion",
            name="override_reason",
            field=models.TextField(
                blank=True, help_text="why it was promoted without an external evaluation"
            ),
        ),
    ]
