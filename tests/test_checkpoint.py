"""On SQLite the worker leaves the copying of the write-ahead log to a thread of its own.

What is checked is where the data goes: the worker's commits copy the log into
the database file only past a backstop (its connection's ``wal_autocheckpoint``
is ``BACKSTOP_PAGES``, not SQLite's 1,000), and yet what it wrote reaches that
file soon after, well below either threshold; and that the log stays bounded
while a backlog drains.
"""

import os
import threading
from pathlib import Path

import pytest
from django.db import connection, connections, transaction

from activity_queue import checkpoint, enqueue, signals
from activity_queue.models import Activity
from activity_queue.worker import Worker

from .conftest import running, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

THREAD = "activity-queue-checkpoint"


def checkpointers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD and t.is_alive()]


def empty_log() -> None:
    """Copy the whole log into the database file and cut it to nothing, from this test's
    connection: nothing written before counts, nothing is copied later by accident."""
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert cursor.fetchone()[0] == 0


def autocheckpoint_pages(conn) -> int:
    """``wal_autocheckpoint`` of a connection (a pragma of the connection, not the file)."""
    with conn.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        return cursor.fetchone()[0]


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write-ahead log")
def test_what_the_worker_writes_reaches_the_database_file_through_the_checkpoint_thread(
        receiver, worker):
    empty_log()
    database = Path(connection.settings_dict["NAME"])
    settings_seen: list[int] = []

    def on_delivered(sender, outcome, **kwargs):  # sent from the worker's own thread
        settings_seen.append(autocheckpoint_pages(connections["default"]))

    signals.activity_delivered.connect(on_delivered)
    w = worker()
    try:
        with running(w):
            marker = "checkpointed-by-its-own-thread"
            with transaction.atomic():
                for i in range(5):
                    enqueue({"type": "Create", "object": f"https://o.example/{marker}/{i}"},
                            to=receiver.url("/inbox/"))
            assert wait_until(lambda: Activity.objects.filter(status="sent").count() == 5)
            assert len(checkpointers()) == 1
            assert wait_until(lambda: marker.encode() in database.read_bytes(), timeout=10), \
                "the log was not copied into the database file"
    finally:
        signals.activity_delivered.disconnect(on_delivered)
    assert settings_seen and set(settings_seen) == {checkpoint.BACKSTOP_PAGES}
    assert not checkpointers(), "the thread ends with the worker"


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write-ahead log")
def test_the_log_stays_bounded_while_a_backlog_drains(receiver, worker, monkeypatch):
    """The log starts again from its beginning only when a transaction begins with all of
    it copied; a busy worker always begins its next one while the thread still copies.
    With no backstop of its own, the log grew by the size of everything written."""
    monkeypatch.setattr(checkpoint, "BACKSTOP_PAGES", 100)
    log = Path(connection.settings_dict["NAME"] + "-wal")
    padding = "x" * 3000
    with transaction.atomic():  # not timed: about 3 MB of log by itself
        for i in range(1000):
            enqueue({"type": "Create", "object": f"https://o.example/{i}", "content": padding},
                    to=receiver.url(f"/inbox/{i % 8}"))
    empty_log()
    w = worker()
    with running(w):
        assert wait_until(lambda: Activity.objects.filter(status="sent").count() == 1000,
                          timeout=30)
        # The file keeps the largest size the log ever had (no journal_size_limit).
        largest = os.path.getsize(log)
    assert largest < 1.5 * 2**20, f"the log grew to {largest / 2**20:.1f} MB"


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write-ahead log")
def test_the_log_file_shrinks_back_after_a_long_reader(receiver, worker, monkeypatch):
    """A read transaction held open elsewhere stops every checkpoint, so the log grows;
    the checkpoint thread's connection keeps the file from being deleted, so once the
    reader is gone it must be cut back, not left at its largest."""
    import sqlite3

    monkeypatch.setattr(checkpoint, "BACKSTOP_PAGES", 64)
    monkeypatch.setattr(checkpoint, "LOG_FILE_LIMIT", 256 * 1024)
    name = connection.settings_dict["NAME"]
    log = Path(name + "-wal")
    reader = sqlite3.connect(name, isolation_level=None)
    w = worker()
    try:
        with running(w):
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM activity_queue_activity").fetchone()
            with transaction.atomic():
                for i in range(300):
                    enqueue({"type": "Create", "object": f"https://o.example/{i}",
                             "content": "x" * 3000}, to=receiver.url(f"/inbox/{i % 4}"))
            assert wait_until(lambda: Activity.objects.filter(status="sent").count() == 300,
                              timeout=30)
            grown = os.path.getsize(log)
            reader.execute("COMMIT")
            for i in range(20):  # later batches restart the log and cut the file back
                enqueue({"type": "Update", "object": f"https://o.example/{i}"},
                        to=receiver.url("/inbox/"))
                sent = 301 + i
                assert wait_until(lambda n=sent: Activity.objects.filter(status="sent").count()
                                  == n, timeout=10)
                if os.path.getsize(log) <= checkpoint.LOG_FILE_LIMIT:
                    break
            shrunk = os.path.getsize(log)
    finally:
        reader.close()
    assert grown > 1024 * 1024, grown
    assert shrunk <= checkpoint.LOG_FILE_LIMIT, (grown, shrunk)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write-ahead log")
def test_only_the_running_threads_connection_gets_the_backstop(worker):
    """A shutdown from another thread (a Celery signal handler) must not change the
    checkpoints of that thread's connection, which is the site's."""
    w = worker()
    run = threading.Thread(target=w.run_once, kwargs={"timeout": 10})
    run.start()
    run.join(30)
    assert w._checkpointer is not None
    w._checkpointer.adopt()
    assert autocheckpoint_pages(connection) == 1000  # SQLite's default


@pytest.mark.skipif(connection.vendor == "sqlite", reason="only SQLite has the thread")
def test_other_databases_have_no_checkpoint_thread(receiver, worker):
    w: Worker = worker()
    with running(w):
        enqueue({"type": "Create", "object": "https://o.example/no-thread"},
                to=receiver.url("/inbox/"))
        assert wait_until(lambda: Activity.objects.filter(status="sent").exists())
        assert not checkpointers()
