"""enqueue() as a transaction's first statement on PostgreSQL: one round trip with its BEGIN.

The wire is read through libpq's own protocol trace of the connection.
"""

import tempfile
import time
from contextlib import contextmanager

import pytest
from django.db import OperationalError, ProgrammingError, connection, transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from activity_queue import enqueue, pgfunctions
from activity_queue.models import ScheduledActivity

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's wire protocol"),
    pytest.mark.django_db(transaction=True),
]

NOTE = {"type": "Create", "object": {"@id": "https://here.example/notes/1", "@type": "Note"}}
INBOX = "https://remote.example/inbox/"
OPENING = f"BEGIN; SELECT * FROM {pgfunctions.ENQUEUE_FUNCTION}("


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
    assert queries[0].startswith(OPENING)
    assert queries[1:] == ["COMMIT"]
    stored = ScheduledActivity.objects.get()
    assert (stored.pk, stored.inbox, stored.has_predecessor) == (row.pk, INBOX, False)
    again = enqueue({**NOTE, "type": "Update"}, to=[INBOX, "https://other.example/inbox/"])
    assert [(r.inbox, r.has_predecessor) for r in again] == [
        (INBOX, True), ("https://other.example/inbox/", False)]


def test_what_is_bound_on_the_client_is_stored_as_given():
    tricky = "it's a \\back\\slash, $$ %s {a,b} \"quoted\" été 日本 🎉 E'x'"
    activity = {"type": "Note", "id": f"https://here.example/{tricky}",
                "object": {"@id": f"https://here.example/o/{tricky}", "content": tricky * 50}}
    inboxes = [f"https://h{i}.example/inbox/{i}'" for i in range(17)]  # past INLINE_ARRAY
    with sent_queries() as queries, transaction.atomic():
        rows = enqueue(activity, to=inboxes)
    assert queries[0].startswith(OPENING)
    stored = {r.pk: r for r in ScheduledActivity.objects.all()}
    assert sorted(stored) == sorted(r.pk for r in rows)
    assert sorted(r.inbox for r in stored.values()) == sorted(inboxes)
    for row in stored.values():
        assert row.payload == activity
        assert (row.activity_id, row.object_id) == (activity["id"], activity["object"]["@id"])


def test_a_rolled_back_transaction_keeps_nothing_and_the_connection_goes_on():
    with sent_queries() as queries, pytest.raises(RuntimeError), transaction.atomic():
        enqueue(NOTE, to=INBOX)
        raise RuntimeError("the caller's view failed")
    assert queries[0].startswith(OPENING) and queries[1:] == ["ROLLBACK"]
    assert not ScheduledActivity.objects.exists()
    enqueue(NOTE, to=INBOX)
    assert ScheduledActivity.objects.count() == 1


def test_a_server_error_is_djangos_error_and_the_transaction_rolls_back():
    pgfunctions.uninstall()
    try:
        with sent_queries() as queries, pytest.raises(
                ProgrammingError, match=pgfunctions.ENQUEUE_FUNCTION), transaction.atomic():
            enqueue(NOTE, to=INBOX)
    finally:
        pgfunctions.install()
    assert queries[0].startswith(OPENING)
    assert not ScheduledActivity.objects.exists()
    enqueue(NOTE, to=INBOX)
    assert ScheduledActivity.objects.count() == 1


def test_a_transaction_marked_for_rollback_sends_nothing():
    with sent_queries() as queries, transaction.atomic():
        transaction.set_rollback(True)
        with pytest.raises(TransactionManagementError):
            enqueue(NOTE, to=INBOX)
    assert queries == []


def test_a_lost_connection_is_an_operational_error():
    import psycopg

    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    params = connection.get_connection_params()
    with psycopg.connect(**{k: v for k, v in params.items()
                            if k in ("host", "port", "user", "password", "dbname")},
                         autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 10
        while other.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                            [pid]).fetchone():
            assert time.monotonic() < deadline, "the backend did not go away"
            time.sleep(0.01)
    with pytest.raises(OperationalError), transaction.atomic():
        enqueue(NOTE, to=INBOX)
    connection.close()
    enqueue(NOTE, to=INBOX)
    assert ScheduledActivity.objects.count() == 1


def test_an_isolation_level_set_on_the_connection_is_kept():
    from psycopg import IsolationLevel

    connection.ensure_connection()
    connection.connection.isolation_level = IsolationLevel.SERIALIZABLE
    try:
        with sent_queries() as queries, transaction.atomic():
            enqueue(NOTE, to=INBOX)
            with connection.cursor() as cursor:
                cursor.execute("SHOW transaction_isolation")
                level = cursor.fetchone()[0]
    finally:
        connection.connection.isolation_level = None
    assert level == "serializable"
    assert queries[0] == "BEGIN ISOLATION LEVEL SERIALIZABLE"


def test_server_side_binding_keeps_the_values_out_of_the_query_text():
    """A site that asked for server-side binding gets it: the values go as parameters."""
    options = connection.settings_dict["OPTIONS"]
    connection.close()
    options["server_side_binding"] = True
    try:
        with sent_queries() as queries, transaction.atomic():
            enqueue(NOTE, to=INBOX)
    finally:
        del options["server_side_binding"]
        connection.close()
    assert queries[0] == "BEGIN"
    assert not [q for q in queries if INBOX in q]
    assert ScheduledActivity.objects.get().inbox == INBOX


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
