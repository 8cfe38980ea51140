"""Each activity's body is stored once, in ``Payload``; queued and logged rows refer to it.

Queued rows lose the activity's id, type, object and enqueue time too: they are
the payload's; a row keeps a 64-bit key of its object instead, for the redundancy
checks' index. Existing rows are moved, with the exact JSON text they held: one
payload for each distinct (id, type, object, body) among queued and logged rows,
so the copies of a fan-out share one. ``enqueue()``'s PostgreSQL function becomes
``activity_queue_enqueue_v3``, which writes the payload and its deliveries.
"""

import hashlib
from importlib import import_module

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import activity_queue.models

QUEUE = "activity_queue_scheduledactivity"
LOG = "activity_queue_activity"
PAYLOAD = "activity_queue_payload"

V2 = ("activity_queue_enqueue_v2"
      "(text, text, text, text, timestamptz, timestamptz, text[], text[])")
V3 = ("activity_queue_enqueue_v3"
      "(text, text, text, bigint, text, timestamptz, timestamptz, text[], text[])")

#: Like v2 (migration 0009: a generic plan, no sequential scans), with the payload
#: written once, and the queue probed by the object's key.
CREATE_V3 = f"""
CREATE FUNCTION {V3.split("(")[0]}(
    p_activity_id text, p_type text, p_object_id text, p_object_key bigint, p_payload text,
    p_created timestamptz, p_due timestamptz, p_inboxes text[], p_hosts text[])
RETURNS TABLE (row_id bigint, row_inbox text, row_has_predecessor boolean, row_payload bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $fn$
DECLARE
    v_payload bigint;
BEGIN
    INSERT INTO {PAYLOAD} (activity_id, activity_type, object_id, body, created_at)
    VALUES (p_activity_id, p_type, p_object_id, p_payload, p_created)
    RETURNING id INTO v_payload;
    RETURN QUERY
    INSERT INTO {QUEUE} AS s (
        payload_id, object_key, next_attempt_at, inbox, host, attempts, last_error,
        leased_by, has_predecessor)
    SELECT v_payload, p_object_key, p_due, v.inbox, v.host, 0, '', '',
           p_object_id <> '' AND (
               (SELECT 1 FROM {QUEUE} q
                WHERE q.object_key = p_object_key AND q.inbox = v.inbox LIMIT 1) IS NOT NULL
               OR (SELECT 1 FROM {LOG} d
                   WHERE d.inbox = v.inbox AND d.object_id = p_object_id
                     AND d.direction = 'out' AND d.status = 'sent' LIMIT 1) IS NOT NULL)
    FROM unnest(p_inboxes, p_hosts) AS v(inbox, host)
    RETURNING s.id, s.inbox::text, s.has_predecessor, v_payload;
    PERFORM pg_notify('activity_queue', '');
END
$fn$
"""


def _check_now(schema_editor) -> None:
    """Run the foreign-key checks the row updates left pending: PostgreSQL refuses to
    alter a table with pending trigger events in the same transaction."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        schema_editor.execute("SET CONSTRAINTS ALL DEFERRED")


def _write(schema_editor, sql: str) -> None:
    """Run a statement that moves rows: on a connection, since MySQL refuses the schema
    editor's statements inside the data migration's transaction."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(sql)


def _text(connection, column: str) -> str:
    if connection.vendor == "mysql":  # MySQL's JSON type compares with JSON only
        return f"CAST({column} AS CHAR)"
    return f"{column}::text" if connection.vendor == "postgresql" else column


def to_payloads(apps, schema_editor):
    connection = schema_editor.connection
    q, a = _text(connection, "q.legacy_payload"), _text(connection, "a.legacy_payload")
    _write(schema_editor, f"""
        INSERT INTO {PAYLOAD} (activity_id, activity_type, object_id, body, created_at)
        SELECT activity_id, activity_type, object_id, body, MIN(created_at) FROM (
            SELECT q.activity_id, q.activity_type, q.object_id, {q} AS body, q.created_at
            FROM {QUEUE} q
            UNION ALL
            SELECT a.activity_id, a.activity_type, a.object_id, {a}, a.created_at
            FROM {LOG} a
        ) moved
        GROUP BY activity_id, activity_type, object_id, body
    """)
    for table in (QUEUE, LOG):
        body = _text(connection, f"{table}.legacy_payload")
        _write(schema_editor, f"""
            UPDATE {table} SET payload_id = (
                SELECT p.id FROM {PAYLOAD} p
                WHERE p.activity_id = {table}.activity_id
                  AND p.activity_type = {table}.activity_type
                  AND p.object_id = {table}.object_id AND p.body = {body}
                ORDER BY p.id LIMIT 1)
        """)
    _check_now(schema_editor)


def _key(object_id: str) -> int:
    """``activity_queue.models.object_key``, frozen here as the stored keys depend on it."""
    if not object_id:
        return 0
    digest = hashlib.blake2b(object_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True) or 1


def object_keys(apps, schema_editor):
    using = schema_editor.connection.alias
    Payload = apps.get_model("activity_queue", "Payload")
    ScheduledActivity = apps.get_model("activity_queue", "ScheduledActivity")
    about = (Payload.objects.using(using).exclude(object_id="")
             .filter(pk__in=ScheduledActivity.objects.using(using).values("payload_id"))
             .values_list("pk", "object_id"))
    for pk, object_id in about.iterator():
        ScheduledActivity.objects.using(using).filter(payload_id=pk).update(
            object_key=_key(object_id))
    _check_now(schema_editor)


def from_payloads(apps, schema_editor):
    body = "CAST(p.body AS jsonb)" if schema_editor.connection.vendor == "postgresql" else "p.body"
    identity = ["activity_id", "activity_type", "object_id", "created_at"]
    for table, columns in ((QUEUE, identity), (LOG, [])):
        for column, value in [("legacy_payload", body), *((c, f"p.{c}") for c in columns)]:
            _write(schema_editor,
                   f"UPDATE {table} SET {column} = (SELECT {value} FROM {PAYLOAD} p "
                   f"WHERE p.id = {table}.payload_id)")
    _check_now(schema_editor)


def create_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {V2}")
        schema_editor.execute(CREATE_V3)


def drop_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {V3}")
        v2 = import_module("activity_queue.migrations.0009_enqueue_function_v2")
        schema_editor.execute(v2.CREATE)


class Migration(migrations.Migration):
    dependencies = [("activity_queue", "0010_host_unavailable")]

    operations = [
        migrations.CreateModel(
            name="Payload",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("activity_id", activity_queue.models.URIField(
                    help_text="The activity's own id (URI).", max_length=500)),
                ("activity_type", models.CharField(max_length=32)),
                ("object_id", activity_queue.models.URIField(blank=True, max_length=2000)),
                ("body", models.TextField(
                    help_text="The JSON text, exactly as sent.")),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now,
                                                    help_text="enqueued or received")),
            ],
            options={
                "indexes": [
                    models.Index(fields=["activity_id"], name="aq_payload_activity"),
                    activity_queue.models.PrefixIndex(fields=["object_id"], name="aq_payload_object"),
                ],
            },
        ),
        migrations.RenameField("scheduledactivity", "payload", "legacy_payload"),
        migrations.RenameField("activity", "payload", "legacy_payload"),
        migrations.AddField(
            model_name="scheduledactivity", name="payload",
            field=models.ForeignKey(db_index=False, null=True,
                                    on_delete=django.db.models.deletion.PROTECT,
                                    related_name="deliveries", to="activity_queue.payload"),
        ),
        migrations.AddField(
            model_name="activity", name="payload",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.PROTECT,
                                    related_name="records", to="activity_queue.payload"),
        ),
        # Nullable before they are copied and dropped, so that reversing this migration
        # can add them back empty and refill them before they are required again.
        migrations.AlterField("scheduledactivity", "legacy_payload",
                              models.JSONField(null=True)),
        migrations.AlterField("activity", "legacy_payload", models.JSONField(null=True)),
        migrations.AlterField("scheduledactivity", "activity_id",
                              models.CharField(max_length=500, null=True)),
        migrations.AlterField("scheduledactivity", "activity_type",
                              models.CharField(max_length=32, null=True)),
        migrations.RunPython(to_payloads, from_payloads),
        migrations.RemoveIndex("scheduledactivity", "aq_sched_activity"),
        migrations.RemoveIndex("scheduledactivity", "aq_sched_inbox_object"),
        migrations.RemoveField("scheduledactivity", "legacy_payload"),
        migrations.RemoveField("scheduledactivity", "activity_id"),
        migrations.RemoveField("scheduledactivity", "activity_type"),
        migrations.RemoveField("scheduledactivity", "object_id"),
        migrations.RemoveField("scheduledactivity", "created_at"),
        migrations.RemoveField("activity", "legacy_payload"),
        migrations.AlterField(
            model_name="scheduledactivity", name="payload",
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT,
                                    related_name="deliveries", to="activity_queue.payload"),
        ),
        migrations.AlterField(
            model_name="activity", name="payload",
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT,
                                    related_name="records", to="activity_queue.payload"),
        ),
        migrations.AddField("scheduledactivity", "object_key",
                            models.BigIntegerField(default=0)),
        migrations.AddIndex("scheduledactivity",
                            models.Index(fields=["payload"], name="aq_sched_payload")),
        migrations.RunPython(object_keys, migrations.RunPython.noop),
        migrations.AddIndex(
            "scheduledactivity",
            activity_queue.models.PrefixIndex(fields=["object_key", "inbox"],
                                               name="aq_sched_object_inbox"),
        ),
        migrations.RunPython(create_function, drop_function),
    ]
