"""An attempt counts when a row is claimed, so MAX_ATTEMPTS bounds what a receiver sees."""

import signal
from datetime import timedelta

import pytest
from django.utils import timezone

from activity_queue import enqueue
from activity_queue.lifecycle import State
from activity_queue.models import Activity, ScheduledActivity
from activity_queue.sending import queue as store
from activity_queue.sending.jobs import Outcome

from ..support.helpers import aq_settings, wait_until
from ..support.receiver import Rule

pytestmark = pytest.mark.django_db(transaction=True)

NOTE = {"type": "Create", "object": "https://here.example/notes/1"}
RESOLVE = {"circuit_threshold": 5, "circuit_cooldown": 60.0, "cooldown_max": 3600.0}


def expire_leases() -> None:
    ScheduledActivity.objects.update(leased_until=timezone.now() - timedelta(seconds=1))


def attempts() -> int:
    return ScheduledActivity.objects.get().attempts


def test_a_claim_counts_an_attempt_and_a_release_gives_it_back(receiver):
    enqueue(NOTE, to=receiver.url("/inbox/"))
    (job,) = store.claim("w1", 10, lease=30)
    assert job.attempts == attempts() == 1
    assert store.release("w1", [job.id]) == 1
    assert attempts() == 0
    (job,) = store.claim("w1", 10, lease=30)
    assert job.attempts == 1, "a release is not an attempt"


@pytest.mark.parametrize(("state", "left"), [(State.RETRYING, 1), (State.PENDING, 0)],
                         ids=["retry keeps it", "deferral gives it back"])
def test_an_outcome_keeps_the_attempt_unless_the_row_went_back_unsent(receiver, state, left):
    enqueue(NOTE, to=receiver.url("/inbox/"))
    (job,) = store.claim("w1", 10, lease=30)
    store.resolve("w1", [Outcome(job, state, error="x", retry_at=timezone.now())], **RESOLVE)
    assert attempts() == left


def test_the_log_counts_each_attempt_once(receiver, worker):
    receiver.rules["/inbox/"] = Rule(sequence=[503, 503, 202])
    enqueue(NOTE, to=receiver.url("/inbox/"))
    with aq_settings(BACKOFF_FACTOR=0.0):
        w = worker()
        for _ in range(3):
            w.run_once(timeout=10)
    logged = Activity.objects.get()
    assert (logged.status, logged.attempts) == (State.SENT, 3)
    assert receiver.calls["/inbox/"] == 3


def test_a_row_whose_last_attempt_left_no_outcome_fails_unsent(receiver, worker):
    """A delivery that kills its worker every time is not retried forever."""
    enqueue(NOTE, to=receiver.url("/inbox/"))
    for _ in range(3):  # three claims whose worker died: the leases ran out
        store.claim("dead", 10, lease=30)
        expire_leases()
    with aq_settings(MAX_ATTEMPTS=3):
        report = worker().run_once(timeout=10)
    assert (report.failed, report.claimed) == (1, 0)
    assert receiver.received == []
    logged = Activity.objects.get()
    assert (logged.status, logged.attempts) == (State.FAILED, 3)
    assert "ended without an outcome" in logged.error
    assert not ScheduledActivity.objects.exists()


def test_max_attempts_bounds_the_posts_across_sigkills(receiver, spawn):
    """Each worker is killed while its POST hangs: the receiver sees MAX_ATTEMPTS of them."""
    receiver.rules["/hole/"] = Rule(delay=-1)  # holds every request open
    enqueue(NOTE, to=receiver.url("/hole/"))
    queue = {"MAX_ATTEMPTS": 3, "LEASE": 1.0, "TIMEOUT": 60.0, "POLL_INTERVAL": 0.1}
    try:
        for made in range(1, 4):
            proc = spawn("activity_worker", queue=queue)
            assert receiver.wait_for(lambda r, n=made: r.calls.get("/hole/", 0) >= n,
                                     timeout=30), proc.stderr()
            proc.send(signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
        last = spawn("activity_worker", queue=queue)
        assert wait_until(lambda: Activity.objects.exists(), timeout=30), last.stderr()
    finally:
        receiver.release.set()
    logged = Activity.objects.get()
    assert (logged.status, logged.attempts) == (State.FAILED, 3)
    assert "ended without an outcome" in logged.error
    assert receiver.calls["/hole/"] == 3
