"""On SQLite, the due index also holds ``id``, ``host`` and ``leased_until``
(:class:`activity_queue.models.DueIndex`), so that claims skip rows they cannot take
without reading them. PostgreSQL keeps its index as it is: nothing is rebuilt there.
"""

from django.db import migrations, models

import activity_queue.models


def rebuild_on_sqlite(old, new):
    def rebuild(apps, schema_editor):
        if schema_editor.connection.vendor != "sqlite":
            return
        model = apps.get_model("activity_queue", "ScheduledActivity")
        schema_editor.remove_index(model, old)
        schema_editor.add_index(model, new)
    return rebuild


NARROW = models.Index(fields=["next_attempt_at"], name="aq_sched_due")
COVERING = activity_queue.models.DueIndex(fields=["next_attempt_at"], name="aq_sched_due")


class Migration(migrations.Migration):
    dependencies = [("activity_queue", "0007_host_deferred_until")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveIndex(model_name="scheduledactivity", name="aq_sched_due"),
                migrations.AddIndex(model_name="scheduledactivity", index=COVERING),
            ],
            database_operations=[
                migrations.RunPython(rebuild_on_sqlite(NARROW, COVERING),
                                     rebuild_on_sqlite(COVERING, NARROW), elidable=False),
            ],
        ),
    ]
