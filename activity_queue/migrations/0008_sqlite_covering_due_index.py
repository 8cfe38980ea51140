"""On SQLite, the due index also holds ``id``, ``host`` and ``leased_until``
(:class:`activity_queue.models.DueIndex`), so that claims skip rows they cannot take
without reading them. PostgreSQL keeps its index as it is: nothing is rebuilt there.
"""

from django.db import migrations, models

import activity_queue.models

NARROW = models.Index(fields=["next_attempt_at"], name="aq_sched_due")
COVERING = activity_queue.models.DueIndex(fields=["next_attempt_at"], name="aq_sched_due")


def _rebuild(schema_editor, model, old, new) -> None:
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.remove_index(model, old)
        schema_editor.add_index(model, new)


def widen_on_sqlite(apps, schema_editor):
    _rebuild(schema_editor, apps.get_model("activity_queue", "ScheduledActivity"),
             NARROW, COVERING)


def narrow_on_sqlite(apps, schema_editor):
    _rebuild(schema_editor, apps.get_model("activity_queue", "ScheduledActivity"),
             COVERING, NARROW)


class Migration(migrations.Migration):
    dependencies = [("activity_queue", "0007_host_deferred_until")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveIndex(model_name="scheduledactivity", name="aq_sched_due"),
                migrations.AddIndex(model_name="scheduledactivity", index=COVERING),
            ],
            database_operations=[migrations.RunPython(widen_on_sqlite, narrow_on_sqlite)],
        ),
    ]
