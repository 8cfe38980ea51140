"""Hosts that fail for longer than UNAVAILABLE_AFTER are unavailable: their queued deliveries
end as failures, new ones fail at once, and a probe that is answered brings them back.

Time is moved by editing ``Host.failing_since`` and ``Host.paused_until``, never by sleeping.
"""

import itertools
import logging
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from activity_queue import enqueue, signals
from activity_queue.lifecycle import State
from activity_queue.models import Activity, Host, ScheduledActivity
from activity_queue.operations import actions
from activity_queue.sending import hosts
from activity_queue.sending import queue as store
from activity_queue.sending.jobs import Outcome

from ..support.helpers import aq_settings, recorded_statements
from ..support.receiver import Rule

pytestmark = pytest.mark.django_db(transaction=True)

#: A circuit that never opens in these tests, so that every row is attempted.
SETTINGS = {"CIRCUIT_THRESHOLD": 1000, "MAX_ATTEMPTS": 50, "BACKOFF_FACTOR": 1.0}
_notes = itertools.count()


def send(inbox: str, n: int = 1, delay: float = 0) -> None:
    for _ in range(n):  # a new object each time, or a repeat would be dropped as redundant
        enqueue({"type": "Create", "object": f"https://here.example/notes/{next(_notes)}"},
                to=inbox, delay=delay)


def make_due() -> None:
    ScheduledActivity.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def failing_for(host: str, days: float) -> None:
    Host.objects.filter(host=host).update(
        failing_since=timezone.now() - timedelta(days=days))


def unavailable(host: str, *, probe_due: bool = True, days: float = 8) -> Host:
    """A host that became unavailable by itself, its probe due now (or in an hour)."""
    now = timezone.now()
    probe = now - timedelta(seconds=1) if probe_due else now + timedelta(hours=1)
    health = Host.objects.create(host=host, consecutive_failures=40, trips=6,
                                 failing_since=now - timedelta(days=days),
                                 unavailable_since=now - timedelta(days=1), paused_until=probe)
    hosts.forget_unavailable()
    return health


@pytest.fixture
def announced():
    seen = []

    def listen(sender, **kwargs):
        seen.append(kwargs)

    signals.host_unavailable.connect(listen)
    yield seen
    signals.host_unavailable.disconnect(listen)


def test_a_host_failing_longer_than_the_setting_becomes_unavailable(receiver, worker, sentry,
                                                                     announced, caplog):
    receiver.rules["/inbox/"] = Rule(status=503)
    inbox = receiver.url("/inbox/")
    with aq_settings(**SETTINGS, UNAVAILABLE_AFTER=7 * 86400.0):
        w = worker()
        send(inbox, 3)
        assert w.run_once(timeout=20).retried == 3
        health = Host.objects.get()
        assert health.failing_since is not None and health.unavailable_since is None

        # Six days later: failing, not yet for long enough.
        failing_for(receiver.base, 6)
        make_due()
        assert w.run_once(timeout=20).retried == 3
        assert Host.objects.get().unavailable_since is None

        # Eight days: the next failure makes it unavailable; every queued row ends, the
        # ones this worker held (just written back) and the ones it never claimed.
        failing_for(receiver.base, 8)
        since = Host.objects.get().failing_since
        make_due()
        send(inbox, 2, delay=3600)
        with caplog.at_level(logging.ERROR, logger="activity_queue.failures"):
            report = w.run_once(timeout=20)
    assert report.retired == 5
    health = Host.objects.get()
    assert health.unavailable_since is not None and health.unavailable_by == ""
    assert health.paused_until >= timezone.now() + timedelta(seconds=hosts.PROBE_EVERY - 60)
    assert not ScheduledActivity.objects.exists()
    failed = Activity.objects.filter(status=State.FAILED)
    assert failed.count() == 5
    reason = f"host unavailable: failing since {since:%Y-%m-%d %H:%M} UTC"
    assert {a.error for a in failed} == {reason + "; last error: HTTP 503", reason}
    assert sorted(failed.values_list("attempts", flat=True)) == [0, 0, 3, 3, 3]

    # One event for the host; none per delivery.
    (event,) = sentry.events()
    assert event["fingerprint"] == ["activity_queue", "host-unavailable", receiver.base]
    assert event["tags"]["inbox_host"] == receiver.base
    assert event["contexts"]["host"]["failed_deliveries"] == 5
    (record,) = [r for r in caplog.records if r.name == "activity_queue.failures"]
    assert "is unavailable" in record.getMessage()
    assert announced == [{"signal": signals.host_unavailable, "host": receiver.base,
                          "failing_since": since, "failed": 5}]
    assert receiver.calls["/inbox/"] == 9


def test_unavailable_after_none_never_gives_up(receiver, worker):
    receiver.rules["/inbox/"] = Rule(status=503)
    with aq_settings(**SETTINGS, UNAVAILABLE_AFTER=None):
        w = worker()
        send(receiver.url("/inbox/"))
        w.run_once(timeout=20)
        failing_for(receiver.base, 365)
        make_due()
        assert w.run_once(timeout=20).retried == 1
    assert Host.objects.get().unavailable_since is None
    assert ScheduledActivity.objects.count() == 1


def test_an_answer_ends_the_failure_streak(receiver, worker):
    """A 404 is an answer: the host is up, so its streak starts again at the next failure."""
    receiver.rules["/inbox/"] = Rule(status=503)
    receiver.rules["/missing/"] = Rule(status=404)
    with aq_settings(**SETTINGS):
        w = worker()
        send(receiver.url("/inbox/"))
        w.run_once(timeout=20)
        failing_for(receiver.base, 8)
        ScheduledActivity.objects.all().delete()
        send(receiver.url("/missing/"))
        assert w.run_once(timeout=20).failed == 1
    health = Host.objects.get()
    assert health.failing_since is None and health.unavailable_since is None


def test_a_new_enqueue_to_an_unavailable_host_is_logged_failed_at_once(receiver):
    unavailable("https://dead.example")
    rows = enqueue({"type": "Create", "object": "https://here.example/notes/x"},
                   to=["https://dead.example/inbox/", receiver.url("/inbox/")])
    assert [r.host for r in rows] == [receiver.base]
    assert list(ScheduledActivity.objects.values_list("host", flat=True)) == [receiver.base]
    (failed,) = Activity.objects.all()
    assert (failed.status, failed.inbox, failed.attempts) == (
        "failed", "https://dead.example/inbox/", 0)
    assert failed.error.startswith("host unavailable: failing since ")
    assert failed.object_id == "https://here.example/notes/x"
    assert failed.activity_id == rows[0].activity_id


def test_enqueue_reads_unavailable_hosts_once_in_a_while(receiver):
    """Most enqueues cost no query for this; a host available again is never refused, even
    by a process whose list of unavailable hosts is out of date."""
    unavailable("https://dead.example")
    send(receiver.url("/inbox/"))  # reads the list
    host_table = Host._meta.db_table
    with recorded_statements() as statements:
        send(receiver.url("/inbox/"))
    assert not [sql for sql, _ in statements if host_table in sql]

    Host.objects.all().delete()  # resumed by another process: this one's list is old
    with recorded_statements() as statements:
        send("https://dead.example/inbox/")
    assert ScheduledActivity.objects.filter(host="https://dead.example").count() == 1
    assert [sql for sql, _ in statements if host_table in sql], "the suspect is checked"


def test_rows_queued_for_an_unavailable_host_are_never_sent_and_end(receiver, worker):
    """Written by a process that did not know yet: never claimed, ended by the worker."""
    send(receiver.url("/inbox/"), 2)
    unavailable(receiver.base, probe_due=False)
    with aq_settings(**SETTINGS):
        report = worker().run_once(timeout=20)
    assert (report.claimed, report.retired) == (0, 2)
    assert receiver.received == []
    assert Activity.objects.filter(status="failed").count() == 2
    assert ScheduledActivity.objects.using(connection.alias).next_claimable() == \
        Host.objects.get().paused_until, "a worker that stops when idle wakes for the probe"


def test_an_answered_probe_makes_the_host_available_again(receiver, worker):
    unavailable(receiver.base)
    receiver.rules["/"] = Rule(status=404)  # any answer but 408, 425, 429 and 5xx
    with aq_settings(**SETTINGS):
        worker().run_once(timeout=20)
    (probe,) = receiver.received
    assert (probe.method, probe.path) == ("GET", "/")
    assert not Host.objects.exists()
    send(receiver.url("/inbox/"))
    assert ScheduledActivity.objects.count() == 1


def test_a_failed_probe_waits_for_the_next_one(receiver, worker):
    unavailable(receiver.base)
    receiver.rules["/"] = Rule(status=502)
    with aq_settings(**SETTINGS):
        w = worker()
        before = timezone.now()
        w.run_once(timeout=20)
        health = Host.objects.get()
        assert health.unavailable_since is not None
        assert health.last_error == "probe: HTTP 502"
        assert health.paused_until >= before + timedelta(seconds=hosts.PROBE_EVERY)
        w.run_once(timeout=20)  # not due again
    assert len(receiver.received) == 1


def test_nobody_answers_the_probe(worker):
    unavailable("http://127.0.0.1:1")
    with aq_settings(**SETTINGS):
        worker().run_once(timeout=20)
    assert Host.objects.get().last_error.startswith("probe: connection failed")


def test_a_host_stopped_by_hand_is_not_probed(receiver, worker):
    actions.stop_hosts([receiver.base], by="alice")
    Host.objects.update(paused_until=timezone.now() - timedelta(seconds=1))
    with aq_settings(**SETTINGS):
        worker().run_once(timeout=20)
    assert receiver.received == []
    assert Host.objects.get().unavailable_by == "alice"


@pytest.mark.parametrize("by", ["", "alice"])
def test_a_delivery_in_flight_that_succeeds(receiver, by):
    """The host answered while it was being given up on: it is available again, unless an
    operator stopped it (then only an operator resumes it)."""
    send(receiver.url("/inbox/"))
    (job,) = store.claim("w", 10, lease=30)
    if by:
        actions.stop_hosts([receiver.base], by=by)
    else:
        unavailable(receiver.base)
    store.resolve("w", [Outcome(job, State.SENT, status_code=202)], circuit_threshold=3,
                  circuit_cooldown=10.0, cooldown_max=60.0)
    send(receiver.url("/inbox/"))
    if by:
        assert Host.objects.get().unavailable_by == by
        assert not ScheduledActivity.objects.exists()
    else:
        assert not Host.objects.exists()
        assert ScheduledActivity.objects.count() == 1
