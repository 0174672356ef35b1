from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0004_patient_groups"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="ood_reference",
            field=models.FileField(blank=True, max_length=255, upload_to="models/ood/"),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="ood_summary",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
