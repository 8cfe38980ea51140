"""A host's due rows in order: ``(host, next_attempt_at)`` replaces the index on ``host``.

The claim reads the rows of hosts on probation (timing out, or a half-open
circuit) from their own short range of this index, so that a dead host's
backlog never fills the window of the oldest due rows (activity_queue/store.py).
The new index serves every query the old one did. It is built before the old
one is dropped; on a large queue the build locks writes to the table for its
duration (as every index migration here does).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("activity_queue", "0005_enqueue_function")]

    operations = [
        migrations.AddIndex(
            model_name="scheduledactivity",
            index=models.Index(fields=["host", "next_attempt_at"], name="aq_sched_host_due"),
        ),
        migrations.RemoveIndex(model_name="scheduledactivity", name="aq_sched_host"),
    ]
