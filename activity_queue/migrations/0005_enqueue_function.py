"""The stored function behind ``enqueue()`` on PostgreSQL (see activity_queue/pgfunctions.py).

The ``post_migrate`` handler recreates it after every ``migrate``, so that it
always matches the installed code; this migration makes an upgrade show
pending work, so that ``migrate`` is run before the new code enqueues.
"""

from django.db import migrations


def create(apps, schema_editor):
    from activity_queue import pgfunctions

    pgfunctions.install(schema_editor.connection.alias)


def drop(apps, schema_editor):
    from activity_queue import pgfunctions

    pgfunctions.uninstall(schema_editor.connection.alias)


class Migration(migrations.Migration):
    dependencies = [("activity_queue", "0004_queue_fillfactor")]

    operations = [migrations.RunPython(create, drop)]
