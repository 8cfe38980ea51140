"""The statement behind enqueue(): one per fan-out, its probes index probes however the
tables grow."""

import pytest
from django.db import connection
from django.utils import timezone

from activity_queue import enqueue
from activity_queue.models import Activity, Payload, ScheduledActivity, pair_key
from activity_queue.sending import queue as store

NOTE = {"type": "Create", "object": {"@id": "https://here.example/notes/1", "@type": "Note"}}
pg_only = pytest.mark.skipif(connection.vendor != "postgresql",
                             reason="reads PostgreSQL's EXPLAIN (BUFFERS)")


@pytest.mark.django_db(transaction=True)
def test_has_predecessor_is_set_and_the_order_of_inboxes_kept():
    first = enqueue(NOTE, to=["https://a.example/inbox/", "https://b.example/inbox/"])
    again = enqueue({**NOTE, "type": "Update"},
                    to=["https://c.example/inbox/", "https://b.example/inbox/"])
    assert [r.has_predecessor for r in first] == [False, False]
    assert [(r.inbox, r.has_predecessor) for r in again] == [
        ("https://c.example/inbox/", False), ("https://b.example/inbox/", True)]
    assert sorted(ScheduledActivity.objects.values_list("pk", flat=True)) == sorted(
        r.pk for r in first + again)


def blocks_touched(sql: str, params: list) -> int:
    """Shared buffers a statement read or hit, functions it calls included."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0][0]["Plan"]
    return plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)


@pg_only
@pytest.mark.django_db
def test_the_probes_stay_index_probes_once_the_tables_are_large():
    """The connection keeps the function's plan for its life, planned at the first call.
    A queue is often empty then; the probes must not become a scan of the whole queue
    and log once they have grown (a backlog behind a dead host, months of log)."""
    queue, log = ScheduledActivity._meta.db_table, Activity._meta.db_table
    inbox = "https://remote.example/users/someone/inbox"
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {queue}")  # in this transaction: both tables are empty
        cursor.execute(f"ANALYZE {log}")
        cursor.execute("DISCARD PLANS")
    enqueue(NOTE, to=inbox)  # plans the function's statement on the empty tables
    other = "'https://here.example/notes/other-' || i"
    payloads = Payload._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {payloads} (activity_id, activity_type, object_id, body, created_at)"
            f" SELECT 'a' || i, 'Create', {other}, '{{}}', now()"
            " FROM generate_series(1, 30000) AS i")
        cursor.execute(
            f"INSERT INTO {queue} (payload_id, pair_key, next_attempt_at, inbox, host,"
            " attempts, last_error, leased_by, has_predecessor)"
            f" SELECT id, id, now(), %s, %s, 0, '', '', FALSE FROM {payloads}"
            " WHERE activity_id LIKE 'a%%'", [inbox, "https://remote.example"])
        cursor.execute(
            f"INSERT INTO {log} (activity_id, activity_type, object_id, payload_id, created_at,"
            " resolved_at, inbox, host, attempts, error, response_excerpt, direction, status)"
            f" SELECT activity_id, 'Create', object_id, id, now(), now(), %s, %s, 1, '', '',"
            f" 'out', 'sent' FROM {payloads} WHERE activity_id LIKE 'a%%'",
            [inbox, "https://remote.example"])
    now = timezone.now()
    common = {"activity_id": "https://here.example/a/2", "activity_type": "Create",
              "object_id": "https://here.example/notes/2"}
    for inboxes in ([inbox], [inbox, "https://other.example/inbox"]):
        touched = blocks_touched(
            f"SELECT * FROM {store.ENQUEUE_FUNCTION}(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [*common.values(), "{}", now, now, inboxes, ["https://remote.example"] * len(inboxes),
             [pair_key(common["object_id"], i) for i in inboxes]])
        assert touched < 100, f"one enqueue to {len(inboxes)} inbox(es) touched {touched} blocks"
