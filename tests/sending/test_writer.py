"""The background writer: on PostgreSQL outcomes are written while the next batch is claimed."""

import threading

import pytest
from django.db import connection

from activity_queue import enqueue
from activity_queue.lifecycle import State
from activity_queue.models import Activity, ScheduledActivity
from activity_queue.sending.jobs import Job, Outcome
from activity_queue.sending.writer import BackgroundWriter

from ..support.helpers import running, wait_until

NOTE = {"type": "Create", "object": "https://here.example/notes/1"}


def outcome(job_id: int) -> Outcome:
    job = Job(job_id, "https://a.example/inbox/", "https://a.example", 0, False, "Create",
              f"https://here.example/a/{job_id}", "", b"{}")
    return Outcome(job, State.SENT, status_code=202)


def test_a_failed_write_comes_back_with_its_outcomes():
    calls = []

    def write(outcomes):
        calls.append(outcomes)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return outcomes, []

    woken = threading.Event()
    writer = BackgroundWriter(write, woken.set)
    try:
        batch = [outcome(1), outcome(2)]
        writer.submit(batch)
        assert writer.busy and writer.ids == {1, 2}
        with pytest.raises(RuntimeError, match="still writing"):
            writer.submit([outcome(3)])
        done = writer.result(timeout=10)
        assert woken.is_set()
        assert done.outcomes == batch and isinstance(done.error, RuntimeError)
        assert not writer.busy
        writer.submit(done.outcomes)
        again = writer.result(timeout=10)
        assert again.error is None and again.written == batch
    finally:
        writer.stop()


@pytest.mark.django_db(transaction=True)
def test_worker_on_postgresql_writes_from_its_writer_thread(receiver, worker):
    if connection.vendor != "postgresql":
        pytest.skip("the background writer runs on PostgreSQL only (on MariaDB it measured "
                    "no gain); SQLite and MySQL/MariaDB write inline")
    enqueue(NOTE, to=[receiver.url(f"/inbox/{i}") for i in range(30)])
    w = worker()
    names = []
    with running(w):
        assert wait_until(lambda: Activity.objects.filter(status="sent").count() == 30, 20)
        names = [t.name for t in threading.enumerate()]
    assert "activity-queue-writer" in names
    assert not ScheduledActivity.objects.exists()
    assert len(receiver.received) == 30
    assert "activity-queue-writer" not in [t.name for t in threading.enumerate()]
