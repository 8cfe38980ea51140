"""A host that fails for longer than ``UNAVAILABLE_AFTER`` is unavailable: nothing is sent
to it until it answers a probe or an operator resumes it.

``failing_since`` is when its current failure streak began; ``unavailable_by`` names the
operator who stopped it by hand (such a host is not probed).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("activity_queue", "0009_enqueue_function_v2")]

    operations = [
        migrations.AddField(
            model_name="host",
            name="failing_since",
            field=models.DateTimeField(
                blank=True, null=True, help_text="the first failure since the host last answered"),
        ),
        migrations.AddField(
            model_name="host",
            name="unavailable_since",
            field=models.DateTimeField(
                blank=True, null=True,
                help_text="deliveries stopped: failing for longer than UNAVAILABLE_AFTER, or by hand"),
        ),
        migrations.AddField(
            model_name="host",
            name="unavailable_by",
            field=models.CharField(
                blank=True, max_length=150,
                help_text="the operator who stopped deliveries by hand (no probes then)"),
        ),
    ]
