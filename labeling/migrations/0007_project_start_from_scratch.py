from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("labeling", "0006_queue_skip")]

    operations = [
        migrations.AddField(
            model_name="project",
            name="start_from_scratch",
            field=models.BooleanField(default=False),
        ),
    ]
