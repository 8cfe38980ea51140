"""``enqueue()``'s statement on PostgreSQL, as a stored function with a versioned name.

``enqueue()`` runs on the caller's request path. As a plain statement its
``INSERT`` (with the two ``has_predecessor`` probes and the wake-up
``pg_notify``) is parsed and planned on every call, which costs more than
running it; PL/pgSQL keeps the plan of the statement inside a function for the
life of the connection. The plan is generic (``plan_cache_mode``): otherwise
PostgreSQL keeps planning each call anew. It is made at the first call, often
while the tables are nearly empty, so sequential scans are off inside the
function: each probe stays one index probe however large the queue and the
log grow. The same statement, as plain SQL, is what SQLite runs
(``activity_queue.sending.queue``).

A change to the function is a new migration with a new name (``_v3``…), never
an edit of this one. This migration also drops ``activity_queue_enqueue``, the
unversioned function older releases re-created after every ``migrate``.
"""

from django.db import migrations

OLD = "activity_queue_enqueue(text, text, text, text, timestamptz, timestamptz, text[], text[])"

CREATE = """
CREATE FUNCTION activity_queue_enqueue_v2(
    p_activity_id text, p_type text, p_object_id text, p_payload text,
    p_created timestamptz, p_due timestamptz, p_inboxes text[], p_hosts text[])
RETURNS TABLE (row_id bigint, row_inbox text, row_has_predecessor boolean)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $fn$
BEGIN
    RETURN QUERY
    INSERT INTO activity_queue_scheduledactivity AS s (
        activity_id, activity_type, object_id, payload, created_at, next_attempt_at,
        inbox, host, attempts, last_error, leased_by, has_predecessor)
    SELECT p_activity_id, p_type, p_object_id, CAST(p_payload AS jsonb), p_created, p_due,
           v.inbox, v.host, 0, '', '',
           p_object_id <> '' AND (
               (SELECT 1 FROM activity_queue_scheduledactivity q
                WHERE q.inbox = v.inbox AND q.object_id = p_object_id LIMIT 1) IS NOT NULL
               OR (SELECT 1 FROM activity_queue_activity d
                   WHERE d.inbox = v.inbox AND d.object_id = p_object_id
                     AND d.direction = 'out' AND d.status = 'sent' LIMIT 1) IS NOT NULL)
    FROM unnest(p_inboxes, p_hosts) AS v(inbox, host)
    RETURNING s.id, s.inbox::text, s.has_predecessor;
    PERFORM pg_notify('activity_queue', '');
END
$fn$
"""

DROP = ("DROP FUNCTION IF EXISTS activity_queue_enqueue_v2"
        "(text, text, text, text, timestamptz, timestamptz, text[], text[])")


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {OLD}")
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("activity_queue", "0008_sqlite_covering_due_index")]

    operations = [migrations.RunPython(create, drop)]
