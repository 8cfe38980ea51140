"""The web process keeps writing while a worker process drains the queue.

On SQLite this is the "database is locked" case: two processes, one file.
The settings use ``transaction_mode: IMMEDIATE`` (as the README tells sites
to), so a transaction that reads and then writes takes the write lock at
BEGIN and waits its turn, instead of failing on the upgrade. It runs on
PostgreSQL too, where it must simply work.
"""

import time

import pytest
from django.db import transaction

from activity_queue import enqueue
from activity_queue.models import Activity, ScheduledActivity

from ..support.helpers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

BACKLOG = 400


def test_writers_and_a_draining_worker_never_see_database_is_locked(receiver, spawn):
    inbox = receiver.url("/inbox/")
    with transaction.atomic():
        for i in range(BACKLOG):
            enqueue({"type": "Create", "object": f"https://origin.example/backlog/{i}"}, to=inbox)
    worker = spawn("activity_worker", queue={"PER_HOST": 16, "BATCH_SIZE": 50,
                                             "POLL_INTERVAL": 0.05})
    assert receiver.wait_for(lambda r: len(r.received) >= 1, timeout=30), worker.stderr()

    writes = 0
    overlapped = 0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        with transaction.atomic():  # read, then write: the pattern that deadlocks when deferred
            pending = ScheduledActivity.objects.filter(inbox=inbox).count()
            enqueue({"type": "Update", "object": f"https://origin.example/web/{writes}"},
                    to=inbox)
        writes += 1
        overlapped += pending > 0

    assert overlapped > 50, "the writes should have raced the worker's own transactions"
    total = BACKLOG + writes
    assert wait_until(lambda: Activity.objects.filter(status="sent").count() == total,
                      timeout=30), worker.stderr()
    assert not ScheduledActivity.objects.exists()
    assert "database is locked" not in worker.stderr()
    assert "step failed" not in worker.stderr()
