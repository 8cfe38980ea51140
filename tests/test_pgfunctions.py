"""The stored function behind enqueue() on PostgreSQL: always there after ``migrate``."""

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from activity_queue import enqueue, pgfunctions
from activity_queue.models import Activity, ScheduledActivity

NOTE = {"type": "Create", "object": {"@id": "https://here.example/notes/1", "@type": "Note"}}
pg_only = pytest.mark.skipif(connection.vendor != "postgresql",
                             reason="the stored function exists on PostgreSQL only")


def function_exists() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_proc WHERE proname = %s",
                       [pgfunctions.ENQUEUE_FUNCTION])
        return cursor.fetchone()[0] == 1


@pg_only
@pytest.mark.django_db(transaction=True)
def test_migrate_recreates_a_missing_function():
    pgfunctions.uninstall()
    assert not function_exists()
    call_command("migrate", "activity_queue", verbosity=0)  # nothing to apply: post_migrate
    assert function_exists()
    with transaction.atomic():
        (row,) = enqueue(NOTE, to="https://remote.example/inbox/")
    stored = ScheduledActivity.objects.get()
    assert (stored.pk, stored.inbox, stored.has_predecessor) == (
        row.pk, "https://remote.example/inbox/", False)


@pg_only
@pytest.mark.django_db(transaction=True)
def test_the_function_sets_has_predecessor_and_keeps_the_order_of_inboxes():
    first = enqueue(NOTE, to=["https://a.example/inbox/", "https://b.example/inbox/"])
    again = enqueue({**NOTE, "type": "Update"},
                    to=["https://c.example/inbox/", "https://b.example/inbox/"])
    assert [r.has_predecessor for r in first] == [False, False]
    assert [(r.inbox, r.has_predecessor) for r in again] == [
        ("https://c.example/inbox/", False), ("https://b.example/inbox/", True)]
    assert sorted(ScheduledActivity.objects.values_list("pk", flat=True)) == sorted(
        r.pk for r in first + again)


@pytest.mark.django_db
def test_install_is_a_no_op_off_postgresql():
    assert pgfunctions.install() is (connection.vendor == "postgresql")


def blocks_touched(sql: str, params: list) -> int:
    """Shared buffers a statement read or hit, functions it calls included."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0][0]["Plan"]
    return plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)


@pg_only
@pytest.mark.django_db
def test_a_plan_made_on_empty_tables_still_probes_by_inbox_once_they_are_large():
    """The connection keeps the function's plan for its life, planned at the first call.
    A queue is often empty then; the probes must not become a scan of the whole queue
    and log once they have grown (a backlog behind a dead host, months of log)."""
    queue, log = ScheduledActivity._meta.db_table, Activity._meta.db_table
    inbox = "https://remote.example/users/someone/inbox"
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {queue}")  # in this transaction: both tables are empty
        cursor.execute(f"ANALYZE {log}")
        cursor.execute("DISCARD PLANS")
    enqueue(NOTE, to=inbox)  # plans the function's statements on the empty tables
    other = "'https://here.example/notes/other-' || i"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {queue} (activity_id, activity_type, object_id, payload, created_at,"
            " next_attempt_at, inbox, host, attempts, last_error, leased_by, has_predecessor)"
            f" SELECT 'a' || i, 'Create', {other}, '{{}}', now(), now(), %s, %s, 0, '', '',"
            " FALSE FROM generate_series(1, 30000) AS i", [inbox, "https://remote.example"])
        cursor.execute(
            f"INSERT INTO {log} (activity_id, activity_type, object_id, payload, created_at,"
            " resolved_at, inbox, host, attempts, error, response_excerpt, direction, status)"
            f" SELECT 'a' || i, 'Create', {other}, '{{}}', now(), now(), %s, %s, 1, '', '',"
            " 'out', 'sent' FROM generate_series(1, 30000) AS i",
            [inbox, "https://remote.example"])
    touched = blocks_touched(
        f"SELECT * FROM {pgfunctions.ENQUEUE_FUNCTION}(%s, %s, %s, %s, now(), now(), %s, %s)",
        ["https://here.example/a/2", "Create", "https://here.example/notes/2", "{}", [inbox],
         ["https://remote.example"]])
    assert touched < 100, f"one enqueue touched {touched} blocks"
