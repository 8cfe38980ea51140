"""Leave room in the queue table's pages on PostgreSQL.

A claim rewrites each row it leases (``leased_by``, ``leased_until``, no
indexed column). With free space on the page PostgreSQL makes that a HOT
update: no new entry in any of the table's indexes. Measured on a 20,000-row
backlog, leasing 500 rows takes about half the time.
"""

from django.db import migrations

FILLFACTOR = 70


def set_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = apps.get_model("activity_queue", "ScheduledActivity")._meta.db_table
    schema_editor.execute(
        f"ALTER TABLE {schema_editor.quote_name(table)} SET (fillfactor = {FILLFACTOR})")


def reset_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = apps.get_model("activity_queue", "ScheduledActivity")._meta.db_table
    schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("activity_queue", "0003_has_predecessor")]

    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor)]
