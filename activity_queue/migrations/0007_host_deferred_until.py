"""Where a failing host's backlog waits for its next answer (``Host.deferred_until``).

Stored with the host's health rather than in one worker's memory, so that any
worker that sees the host answer again, and an operator resuming it, bring the
backlog back at once.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("activity_queue", "0006_queue_host_due_index")]

    operations = [
        migrations.AddField(
            model_name="host",
            name="deferred_until",
            field=models.DateTimeField(
                blank=True, null=True,
                help_text="where the host's backlog waits for its next answer while it fails"),
        ),
    ]
