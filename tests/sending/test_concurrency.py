"""Several workers on one PostgreSQL, MySQL or MariaDB database: leases make every row one
worker's at a time.

Not on SQLite, which supports one worker process (see test_sqlite_concurrency); CI
runs this module on PostgreSQL and MariaDB.
"""

import signal
import threading
from collections import Counter
from urllib.parse import urlsplit

import pytest
from django.db import connection, transaction

from activity_queue import enqueue
from activity_queue.models import Activity, ScheduledActivity
from activity_queue.sending import queue as store

from ..support.helpers import wait_until
from ..support.receiver import Rule

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor == "sqlite",
                       reason="several workers on one database need FOR UPDATE SKIP LOCKED; "
                              "run with AQ_TEST_DB=postgres or AQ_TEST_DB=mysql"),
]


def fan_out(receiver, activities: int, inboxes: int) -> list[tuple[str, str]]:
    """``activities`` activities, each to ``inboxes`` paths; returns (activity id, path) pairs."""
    expected = []
    with transaction.atomic():
        for a in range(activities):
            activity_id = f"https://origin.example/activities/{a}"
            paths = [f"/inbox/{i}/" for i in range(inboxes)]
            enqueue({"id": activity_id, "type": "Create",
                     "object": f"https://origin.example/notes/{a}"},
                    to=[receiver.url(p) for p in paths])
            expected += [(activity_id, p) for p in paths]
    return expected


def arrivals(receiver) -> Counter:
    with receiver.lock:
        return Counter((r.json()["id"], r.path) for r in receiver.received)


def deliveries_logged() -> Counter:
    return Counter(
        (activity_id, urlsplit(inbox).path)
        for activity_id, inbox in Activity.objects.filter(status="sent")
        .values_list("activity_id", "inbox")
    )


def start_workers(spawn, n: int, queue: dict) -> list:
    workers = [spawn("activity_worker", f"--name=w{i}", queue=queue) for i in range(n)]
    for w in workers:
        assert wait_until(lambda w=w: "running" in w.stdout(), timeout=30), w.stderr()
    return workers


def stop_workers(workers) -> None:
    for w in workers:
        w.send(signal.SIGTERM)
    for w in workers:
        assert w.wait(15) == 0, w.stderr()


def test_three_workers_share_a_backlog_and_deliver_each_row_once(receiver, spawn):
    receiver.rules.update({f"/inbox/{i}/": Rule(delay=0.002) for i in range(20)})
    workers = start_workers(spawn, 3, {"PER_HOST": 8, "BATCH_SIZE": 50, "POLL_INTERVAL": 0.2})
    expected = fan_out(receiver, 75, 20)
    holders: set[str] = set()

    def drained() -> bool:
        holders.update(ScheduledActivity.objects.exclude(leased_by="")
                       .values_list("leased_by", flat=True).distinct())
        return not ScheduledActivity.objects.exists()

    assert wait_until(drained, timeout=60, interval=0.01)
    stop_workers(workers)
    assert holders == {"w0", "w1", "w2"}, "every worker should have taken part"
    assert arrivals(receiver) == Counter(expected), "a row was POSTed twice, or never"
    assert deliveries_logged() == Counter(expected)


def test_a_slow_delivery_keeps_its_lease_from_other_workers(receiver, spawn):
    """Deliveries (and the wait for a slot) outlast LEASE: the holder must renew in time."""
    receiver.rules.update({f"/inbox/{i}/": Rule(delay=1.3) for i in range(20)})
    workers = start_workers(spawn, 2, {"LEASE": 1, "PER_HOST": 10, "POLL_INTERVAL": 0.05})
    expected = fan_out(receiver, 1, 20)
    assert wait_until(lambda: not ScheduledActivity.objects.exists(), timeout=30)
    stop_workers(workers)
    assert arrivals(receiver) == Counter(expected), "a leased row was taken by a second worker"
    assert deliveries_logged() == Counter(expected)


def _claim_in_thread(name: str, limit: int, out: dict, claimed: threading.Event,
                     done: threading.Event) -> None:
    try:
        with transaction.atomic():
            out[name] = store.claim(name, limit, lease=30)
            claimed.set()
            done.wait(10)  # hold the row locks while the other connection claims
    finally:
        connection.close()


def test_claim_skips_rows_another_transaction_has_locked(receiver):
    # More rows than the window of oldest due rows a claim locks while it ranks them.
    fan_out(receiver, 1, 200)
    out: dict = {}
    claimed, done = threading.Event(), threading.Event()
    holder = threading.Thread(target=_claim_in_thread, args=("a", 25, out, claimed, done))
    holder.start()
    try:
        assert claimed.wait(10)
        # Without SKIP LOCKED this would wait for "a" to commit, then take the same rows.
        second = store.claim("b", 25, lease=30)
    finally:
        done.set()
        holder.join(15)
    first_ids = {job.id for job in out["a"]}
    second_ids = {job.id for job in second}
    assert len(first_ids) == len(second_ids) == 25
    assert not first_ids & second_ids
    assert dict(Counter(ScheduledActivity.objects.values_list("leased_by", flat=True))) == {
        "a": 25, "b": 25, "": 150}


def test_concurrent_claims_are_disjoint_and_complete(receiver):
    fan_out(receiver, 10, 50)
    taken: dict[str, list[int]] = {}
    start = threading.Barrier(4)

    def claimer(name: str) -> None:
        got: list[int] = []
        try:
            start.wait(10)
            while batch := store.claim(name, 20, lease=30):
                got += [job.id for job in batch]
        finally:
            taken[name] = got
            connection.close()

    threads = [threading.Thread(target=claimer, args=(f"c{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    everything = [job_id for got in taken.values() for job_id in got]
    assert len(everything) == len(set(everything)) == 500
    assert set(everything) == set(ScheduledActivity.objects.values_list("id", flat=True))
