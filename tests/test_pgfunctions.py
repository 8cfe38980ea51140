"""The stored function behind enqueue() on PostgreSQL: always there after ``migrate``."""

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from activity_queue import enqueue, pgfunctions
from activity_queue.models import ScheduledActivity

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
