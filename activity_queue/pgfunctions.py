"""The PostgreSQL side of ``enqueue()``: one stored function, kept current after ``migrate``.

``enqueue()`` sits on the caller's request path. As a plain statement, its
``INSERT`` (with the two ``has_predecessor`` probes and the ``NOTIFY``) is
parsed and planned by the server on every call, which costs more than
executing it. PL/pgSQL keeps the plan of the statements inside a function
for the life of the connection, so the call only parses a short ``SELECT``.
The plan is forced generic: PostgreSQL would otherwise keep re-planning it
for each call, since a custom plan knows the exact number of inboxes and
always looks cheaper than the generic one (measured: 0.78 against 0.50 ms).
Unlike client-side prepared statements, this works through PgBouncer in
transaction mode.

A generic plan is made at the connection's first call, often while the queue
and the log are nearly empty; it is then kept until the next ``ANALYZE``. Made
on small tables, a plain ``EXISTS`` probe became a scan of the whole queue and
log (a sequential scan, or a hashed subplan over every row about the object),
so each ``enqueue()`` grew with the backlog. The probes are therefore lateral
subqueries, which can only be run per inbox with both columns of the index
bound, and the function turns sequential scans off.

Migration 0005 creates the function, and a ``post_migrate`` handler recreates
it after every ``migrate``, so that it also exists in databases built without
migrations (``pytest --nomigrations``) and always matches the installed code.
"""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections, router

from .lifecycle import State
from .models import Activity, ScheduledActivity

ENQUEUE_FUNCTION = "activity_queue_enqueue"
NOTIFY_CHANNEL = "activity_queue"


def enqueue_function_sql() -> str:
    queue = ScheduledActivity._meta.db_table
    log = Activity._meta.db_table
    return f"""
CREATE OR REPLACE FUNCTION {ENQUEUE_FUNCTION}(
    p_activity_id text, p_type text, p_object_id text, p_payload text,
    p_created timestamptz, p_due timestamptz, p_inboxes text[], p_hosts text[])
RETURNS TABLE (row_id bigint, row_inbox text, row_has_predecessor boolean)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $fn$
BEGIN
    RETURN QUERY
    INSERT INTO {queue} AS s (activity_id, activity_type, object_id, payload, created_at,
                              next_attempt_at, inbox, host, attempts, last_error, leased_by,
                              has_predecessor)
    SELECT p_activity_id, p_type, p_object_id, CAST(p_payload AS jsonb), p_created, p_due,
           v.inbox, v.host, 0, '', '',
           (queued.found OR delivered.found) IS TRUE
    FROM unnest(p_inboxes, p_hosts) AS v(inbox, host)
    LEFT JOIN LATERAL (SELECT TRUE AS found FROM {queue} q
                       WHERE p_object_id <> '' AND q.inbox = v.inbox
                         AND q.object_id = p_object_id
                       LIMIT 1) AS queued ON TRUE
    LEFT JOIN LATERAL (SELECT TRUE AS found FROM {log} d
                       WHERE p_object_id <> '' AND d.inbox = v.inbox
                         AND d.object_id = p_object_id
                         AND d.direction = '{Activity.Direction.OUTBOUND.value}'
                         AND d.status = '{State.SENT.value}'
                       LIMIT 1) AS delivered ON TRUE
    RETURNING s.id, s.inbox::text, s.has_predecessor;
    PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
END
$fn$
"""


def _ours(using: str) -> bool:
    return (connections[using].vendor == "postgresql"
            and router.allow_migrate_model(using, ScheduledActivity))


def install(using: str = DEFAULT_DB_ALIAS) -> bool:
    """Create or replace the function on ``using`` if it is a PostgreSQL database that
    holds our tables; whether it did."""
    if not _ours(using):
        return False
    with connections[using].cursor() as cursor:
        cursor.execute(enqueue_function_sql())
    return True


def uninstall(using: str = DEFAULT_DB_ALIAS) -> None:
    if _ours(using):
        with connections[using].cursor() as cursor:
            cursor.execute(f"DROP FUNCTION IF EXISTS {ENQUEUE_FUNCTION}"
                           "(text, text, text, text, timestamptz, timestamptz, text[], text[])")


def on_post_migrate(sender, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    install(using)
