"""Leases: a live lease keeps a row from other workers; an expired one gives it back."""

import re
import sqlite3
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from activity_queue import enqueue
from activity_queue.lifecycle import State
from activity_queue.models import Activity, ScheduledActivity
from activity_queue.sending import queue as store
from activity_queue.sending.jobs import Outcome
from activity_queue.sending.transport import LEASE_ENDING
from activity_queue.sending.worker import Report

from ..support.helpers import aq_settings, recorded_statements, sqlite_plan

pytestmark = pytest.mark.django_db(transaction=True)

NOTE = {"type": "Create", "object": "https://here.example/notes/1"}
RESOLVE = {"circuit_threshold": 5, "circuit_cooldown": 60.0, "cooldown_max": 3600.0}


def lease_to(name: str, seconds: float) -> None:
    ScheduledActivity.objects.update(leased_by=name,
                                     leased_until=timezone.now() + timedelta(seconds=seconds))


def test_row_leased_by_a_live_worker_is_not_claimed(receiver, worker):
    enqueue(NOTE, to=receiver.url("/inbox/"))
    lease_to("other-worker", 30)
    report = worker().run_once(timeout=10)
    assert report.claimed == 0
    assert receiver.received == []
    row = ScheduledActivity.objects.get()
    assert (row.leased_by, row.attempts) == ("other-worker", 0)


def test_expired_lease_is_claimed_and_delivered(receiver, worker):
    enqueue(NOTE, to=receiver.url("/inbox/"))
    lease_to("dead-worker", -1)
    report = worker().run_once(timeout=10)
    assert (report.claimed, report.sent) == (1, 1)
    assert len(receiver.received) == 1
    assert Activity.objects.get().status == "sent"


def test_claim_sets_the_lease_and_skips_rows_not_due(receiver):
    enqueue(NOTE, to=receiver.url("/due/"))
    enqueue(NOTE, to=receiver.url("/later/"), delay=60)
    before = timezone.now()
    jobs = store.claim("w1", 10, lease=30)
    assert [job.inbox for job in jobs] == [receiver.url("/due/")]
    row = ScheduledActivity.objects.get(id=jobs[0].id)
    assert row.leased_by == "w1"
    assert before + timedelta(seconds=30) <= row.leased_until
    assert row.leased_until <= timezone.now() + timedelta(seconds=30)
    assert store.claim("w2", 10, lease=30) == []


def test_claim_takes_the_oldest_due_first(receiver):
    for n in range(5):
        enqueue(NOTE, to=receiver.url(f"/inbox/{n}"))
    ScheduledActivity.objects.filter(inbox=receiver.url("/inbox/3")).update(
        next_attempt_at=timezone.now() - timedelta(hours=1))
    (job,) = store.claim("w1", 1, lease=30)
    assert job.inbox == receiver.url("/inbox/3")


def test_release_gives_rows_back_without_counting_an_attempt(receiver):
    enqueue(NOTE, to=receiver.url("/inbox/"))
    (job,) = store.claim("w1", 10, lease=30)
    assert store.release("w2", [job.id]) == 0, "only the holder can release"
    assert store.release("w1", [job.id]) == 1
    row = ScheduledActivity.objects.get()
    assert (row.leased_by, row.leased_until, row.attempts) == ("", None, 0)
    assert [j.id for j in store.claim("w2", 10, lease=30)] == [job.id]


def test_renew_extends_only_the_holders_lease(receiver):
    enqueue(NOTE, to=receiver.url("/inbox/"))
    (job,) = store.claim("w1", 10, lease=5)
    assert store.renew("w2", [job.id], lease=300) == set()
    assert store.renew("w1", [job.id], lease=300) == {job.id}
    assert ScheduledActivity.objects.get().leased_until > timezone.now() + timedelta(seconds=200)


@pytest.mark.parametrize("verdict", [State.SENT, State.FAILED, State.RETRYING,
                                     State.PENDING])
def test_resolve_leaves_rows_whose_lease_was_taken_over(receiver, verdict):
    """w1's lease expired and w2 claimed the row: w1's late outcome must not touch it."""
    enqueue(NOTE, to=receiver.url("/inbox/"))
    (job,) = store.claim("w1", 10, lease=30)
    lease_to("w1", -1)
    (again,) = store.claim("w2", 10, lease=30)
    assert again.id == job.id
    outcome = Outcome(job, verdict, status_code=503, error="HTTP 503",
                      retry_at=timezone.now() + timedelta(seconds=60))
    written, _, _ = store.resolve("w1", [outcome], **RESOLVE)
    assert written == []
    assert not Activity.objects.exists()
    row = ScheduledActivity.objects.get()
    assert (row.leased_by, row.attempts, row.last_error) == ("w2", 2, "")  # both claims count


def test_resolve_writes_the_holders_outcomes_in_one_batch(receiver):
    enqueue(NOTE, to=[receiver.url(f"/inbox/{n}") for n in range(4)])
    jobs = store.claim("w1", 10, lease=30)
    later = timezone.now() + timedelta(seconds=60)
    outcomes = [
        Outcome(jobs[0], State.SENT, status_code=202, excerpt="{}", duration_ms=1.5),
        Outcome(jobs[1], State.FAILED, status_code=410, error="HTTP 410"),
        Outcome(jobs[2], State.RETRYING, status_code=503, error="HTTP 503", retry_at=later),
        Outcome(jobs[3], State.PENDING, error="host paused"),
    ]
    written, opened, unavailable = store.resolve("w1", outcomes, **RESOLVE)
    assert [o.job.id for o in written] == [j.id for j in jobs]
    assert opened == unavailable == []
    logs = {a.inbox: a for a in Activity.objects.all()}
    assert (logs[jobs[0].inbox].status, logs[jobs[0].inbox].duration_ms) == ("sent", 1.5)
    assert (logs[jobs[1].inbox].status, logs[jobs[1].inbox].error) == ("failed", "HTTP 410")
    retried = ScheduledActivity.objects.get(id=jobs[2].id)
    assert (retried.attempts, retried.last_status, retried.leased_by) == (1, 503, "")
    assert retried.next_attempt_at == later
    deferred = ScheduledActivity.objects.get(id=jobs[3].id)
    assert (deferred.attempts, deferred.last_error, deferred.leased_until) == (0, "", None)



@pytest.mark.skipif(connection.vendor != "sqlite" or sqlite3.sqlite_version_info < (3, 38),
                    reason="a plan of SQLite's, which has Bloom filters since 3.38")
def test_resolve_looks_rows_up_by_id_however_large_the_queue(receiver):
    """With ``ANALYZE`` statistics, SQLite answered a lease check written as a constant
    by building a Bloom filter over the whole queue table: every resolve was a scan of
    the queue, slower with each row waiting behind a dead or paused host."""
    enqueue(NOTE, to=[f"https://paused.example/users/{n}/inbox" for n in range(1000)])
    enqueue(NOTE, to=[receiver.url(f"/inbox/{n}") for n in range(500)])  # a whole batch
    jobs = store.claim("w1", 500, lease=30, exclude_hosts=["https://paused.example"])
    assert len(jobs) == 500
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    later = timezone.now() + timedelta(seconds=60)
    outcomes = [Outcome(j, State.SENT, status_code=202) for j in jobs[:250]] + [
        Outcome(j, State.RETRYING, status_code=503, retry_at=later) for j in jobs[250:]]
    with recorded_statements() as statements:
        written, _, _ = store.resolve("w1", outcomes, **RESOLVE)
    assert len(written) == 500
    queue = ScheduledActivity._meta.db_table
    plans = [line for sql, params in statements if queue in sql
             for line in sqlite_plan(sql, params)]
    assert plans, "no statement on the queue was planned"
    # The queue appears as itself or as "s"; the batch and the holder are the CTEs v and w.
    scans = [p for p in plans
             if "BLOOM" in p or re.match(rf"SCAN ({queue}|s)\b", p)]
    assert scans == [], scans


def _claimed_by(w, n: int) -> list:
    w._ensure_transport()
    jobs = w._claim(n, Report())
    assert len(jobs) == n
    return jobs


def _outcomes(w, n: int) -> list[Outcome]:
    return sorted((w.outcomes.get(timeout=10) for _ in range(n)), key=lambda o: o.job.id)


def test_a_request_whose_lease_is_ending_is_not_started(receiver, worker):
    """A worker that could not renew (its database away) stops sending before another
    worker may take the row and send it too; the row goes back with no attempt counted."""
    enqueue(NOTE, to=[receiver.url(f"/inbox/{n}") for n in range(2)])
    with aq_settings(LEASE=20.0, TIMEOUT=2.0):
        w = worker()
    ending, fresh = _claimed_by(w, 2)
    assert w.lease_margin == 5.0  # a quarter of the lease: less than 3 × TIMEOUT
    w._held[ending.id] = (ending, time.monotonic() - 16.0)
    w.transport.submit([ending, fresh])
    first, second = _outcomes(w, 2)
    assert (first.state, first.error) == (State.PENDING, LEASE_ENDING)
    assert second.state is State.SENT
    assert [r.path for r in receiver.received] == ["/inbox/1"]
    w._resolve([first, second], Report())
    row = ScheduledActivity.objects.get()
    assert (row.id, row.attempts, row.leased_by) == (ending.id, 0, "")


def test_a_row_taken_over_after_its_lease_is_neither_sent_nor_written(receiver, worker):
    enqueue(NOTE, to=receiver.url("/inbox/"))
    with aq_settings(LEASE=20.0):
        w = worker()
    (job,) = _claimed_by(w, 1)
    lease_to(w.id, -1)
    (again,) = store.claim("w2", 10, lease=30)
    w._held[job.id] = (job, time.monotonic() - 10.0)  # due for renewal
    w._renew_leases()
    w.transport.submit([job])
    (outcome,) = _outcomes(w, 1)
    assert (outcome.state, outcome.error) == (State.PENDING, LEASE_ENDING)
    assert receiver.received == []
    w._resolve([outcome], Report())
    assert (ScheduledActivity.objects.get().leased_by, again.id) == ("w2", job.id)
