"""enqueue() as a transaction's first statement on PostgreSQL: one round trip with its BEGIN.

The wire is read through libpq's own protocol trace of the connection.
"""

import tempfile
from contextlib import contextmanager

import pytest
from django.db import ProgrammingError, connection, transaction
from django.test.utils import CaptureQueriesContext

from activity_queue import enqueue, pgfunctions
from activity_queue.models import ScheduledActivity

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's wire protocol"),
    pytest.mark.django_db(transaction=True),
]

NOTE = {"type": "Create", "object": {"@id": "https://here.example/notes/1", "@type": "Note"}}
INBOX = "https://remote.example/inbox/"


@contextmanager
def sent_queries():
    """The simple-protocol queries the client sends meanwhile, in order."""
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    queries: list[str] = []
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        try:
            yield queries
        finally:
            pgconn.untrace()
            trace.seek(0)
            for line in trace:
                fields = line.split("\t")
                if fields[1:2] == ["F"] and fields[3:4] == ["Query"]:
                    queries.append(fields[4].strip().strip('"'))


def test_the_first_statement_travels_with_its_begin():
    with sent_queries() as queries:
        with transaction.atomic():
            (row,) = enqueue(NOTE, to=INBOX)
    assert queries[0].startswith(f"BEGIN; SELECT * FROM {pgfunctions.ENQUEUE_FUNCTION}(")
    assert queries[1:] == ["COMMIT"]
    stored = ScheduledActivity.objects.get()
    assert (stored.pk, stored.inbox, stored.has_predecessor) == (row.pk, INBOX, False)
    again = enqueue({**NOTE, "type": "Update"}, to=[INBOX, "https://other.example/inbox/"])
    assert [(r.inbox, r.has_predecessor) for r in again] == [
        (INBOX, True), ("https://other.example/inbox/", False)]


def test_a_rolled_back_transaction_keeps_nothing_and_the_connection_goes_on():
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue(NOTE, to=INBOX)
        raise RuntimeError("the caller's view failed")
    assert not ScheduledActivity.objects.exists()
    enqueue(NOTE, to=INBOX)
    assert ScheduledActivity.objects.count() == 1


def test_a_server_error_is_djangos_error_and_the_transaction_rolls_back():
    pgfunctions.uninstall()
    try:
        with pytest.raises(ProgrammingError, match=pgfunctions.ENQUEUE_FUNCTION):
            with transaction.atomic():
                enqueue(NOTE, to=INBOX)
    finally:
        pgfunctions.install()
    assert not ScheduledActivity.objects.exists()
    enqueue(NOTE, to=INBOX)
    assert ScheduledActivity.objects.count() == 1


def test_after_the_callers_own_statement_there_is_no_second_begin():
    with sent_queries() as queries:
        with transaction.atomic():
            ScheduledActivity.objects.exists()
            enqueue(NOTE, to=INBOX)
    assert queries[0] == "BEGIN"
    assert [q for q in queries if "BEGIN" in q] == ["BEGIN"]
    assert any(q.startswith(f"SELECT * FROM {pgfunctions.ENQUEUE_FUNCTION}(")
               for q in queries)


def test_query_logging_and_execute_wrappers_still_see_the_statement():
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        enqueue(NOTE, to=INBOX)
    assert any(pgfunctions.ENQUEUE_FUNCTION in q["sql"] for q in captured.captured_queries)
    with connection.execute_wrapper(wrapper), transaction.atomic():
        enqueue({**NOTE, "type": "Update"}, to=INBOX)
    assert any(pgfunctions.ENQUEUE_FUNCTION in sql for sql in seen)
    assert ScheduledActivity.objects.count() == 2
