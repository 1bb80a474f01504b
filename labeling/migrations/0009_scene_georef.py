# A GeoTIFF scene's georeferencing (issue 24).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0008_review_queue_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="scene",
            name="georef",
            field=models.JSONField(
                blank=True,
                help_text="A GeoTIFF's georeferencing (geotransform, crs); null: none",
                null=True,
            ),
        ),
    ]
