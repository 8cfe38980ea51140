"""The per-host circuit breaker: pause a failing host, probe it once, close on success.

Time is moved by editing ``Host.paused_until``, never by sleeping.
"""

import itertools
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from activity_queue import enqueue
from activity_queue.lifecycle import State
from activity_queue.models import Host, ScheduledActivity

from ..support.helpers import aq_settings
from ..support.receiver import Rule

pytestmark = pytest.mark.django_db(transaction=True)

CIRCUIT = {"CIRCUIT_THRESHOLD": 3, "CIRCUIT_COOLDOWN": 10.0, "BACKOFF_FACTOR": 1.0,
           "BACKOFF_MAX": 3600.0}


_notes = itertools.count()


def send(receiver, n: int, path: str = "/inbox/") -> None:
    for _ in range(n):  # a new object each time, or a repeat would be dropped as redundant
        enqueue({"type": "Create", "object": f"https://here.example/notes/{next(_notes)}"},
                to=receiver.url(path))


def make_due() -> None:
    ScheduledActivity.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def end_pause(host: str) -> None:
    """Travel to the end of the pause: the rows the worker moved there are due too."""
    ended = timezone.now() - timedelta(seconds=1)
    until = Host.objects.get(host=host).paused_until
    if until is not None:
        ScheduledActivity.objects.filter(host=host, next_attempt_at__lte=until).update(
            next_attempt_at=ended)
    Host.objects.filter(host=host).update(paused_until=ended)


def attempts() -> list[int]:
    return sorted(ScheduledActivity.objects.values_list("attempts", flat=True))


def test_open_half_open_and_close(receiver, worker):
    receiver.rules["/inbox/"] = Rule(status=503)
    with aq_settings(**CIRCUIT):
        w = worker()

        # Closed: three consecutive failures open the circuit.
        send(receiver, 3)
        before = timezone.now()
        report = w.run_once(timeout=20)
        assert report.retried == 3
        host = Host.objects.get()
        assert host.host == receiver.base
        assert (host.consecutive_failures, host.trips) == (3, 1)
        assert host.last_error == "HTTP 503"
        assert host.circuit == "open"
        assert before + timedelta(seconds=10) <= host.paused_until
        assert host.paused_until <= timezone.now() + timedelta(seconds=10)

        # Open: nothing for the host is claimed, no attempt is burnt.
        send(receiver, 2)
        make_due()
        report = w.run_once(timeout=20)
        assert report.claimed == 0
        assert receiver.calls["/inbox/"] == 3
        assert attempts() == [0, 0, 1, 1, 1]

        # Half-open: once the pause is over, a single probe goes out.
        end_pause(receiver.base)
        before = timezone.now()
        report = w.run_once(timeout=20)
        assert (report.claimed, report.retried) == (1, 1)
        assert receiver.calls["/inbox/"] == 4
        assert sum(attempts()) == 4
        assert not ScheduledActivity.objects.filter(leased_by__gt="").exists()

        # The probe failed: open again, for twice as long.
        host = Host.objects.get()
        assert (host.consecutive_failures, host.trips) == (4, 2)
        assert before + timedelta(seconds=20) <= host.paused_until
        assert host.paused_until <= timezone.now() + timedelta(seconds=20)
        make_due()
        assert w.run_once(timeout=20).claimed == 0

        # A successful probe closes the circuit, then the backlog flows.
        receiver.rules["/inbox/"] = Rule(status=202)
        end_pause(receiver.base)
        report = w.run_once(timeout=20)
        assert (report.claimed, report.sent) == (1, 1)
        assert not Host.objects.exists()
        make_due()
        report = w.run_once(timeout=20)
        assert report.sent == 4
        assert not ScheduledActivity.objects.exists()
    assert receiver.calls["/inbox/"] == 9


def test_the_backlog_of_a_paused_host_waits_for_the_end_of_the_pause(receiver, worker):
    receiver.rules["/inbox/"] = Rule(status=503)
    with aq_settings(**CIRCUIT):
        w = worker()
        send(receiver, 3)
        assert w.run_once(timeout=20).retried == 3  # the circuit opens
        send(receiver, 5)  # queued during the pause, due now
        assert w.run_once(timeout=20).claimed == 0
    until = Host.objects.get().paused_until
    # The rows that were due wait for the end of the pause: claims no longer skip them one
    # by one, and no attempt is counted. The retries keep their own time.
    fresh = ScheduledActivity.objects.filter(attempts=0)
    assert list(fresh.values_list("next_attempt_at", flat=True)) == [until] * 5
    retries = ScheduledActivity.objects.filter(attempts=1)
    assert retries.count() == 3
    assert all(at < until for at in retries.values_list("next_attempt_at", flat=True))
    assert receiver.calls["/inbox/"] == 3


def test_a_success_during_the_pause_brings_the_moved_rows_back(receiver):
    from activity_queue.sending import hosts
    from activity_queue.sending import queue as store
    from activity_queue.sending.jobs import Job, Outcome

    send(receiver, 3)
    now = timezone.now()
    until = now + timedelta(minutes=10)
    Host.objects.create(host=receiver.base, consecutive_failures=3, trips=1, paused_until=until)
    retry = ScheduledActivity.objects.order_by("id").first()
    ScheduledActivity.objects.filter(id=retry.id).update(
        next_attempt_at=now + timedelta(minutes=5))
    ScheduledActivity.objects.exclude(id=retry.id).update(next_attempt_at=now)
    assert hosts.defer_paused() == 2
    # A request already in flight when the circuit opened is answered: the circuit closes.
    job = Job(0, receiver.url("/inbox/"), receiver.base, 0, False, "Create", "a", "", b"{}")
    store.resolve("w", [Outcome(job, State.SENT, status_code=202)], circuit_threshold=3,
                  circuit_cooldown=10.0, cooldown_max=3600.0)
    assert not Host.objects.exists()
    later = timezone.now()
    moved_back = ScheduledActivity.objects.exclude(id=retry.id)
    assert all(now < at <= later for at in moved_back.values_list("next_attempt_at", flat=True))
    assert ScheduledActivity.objects.get(id=retry.id).next_attempt_at == now + timedelta(minutes=5)


def failing_host_backlog(receiver, n: int):
    """``n`` rows of one host, oldest first, and a resolve in which one of them timed out."""
    from activity_queue.sending import queue as store
    from activity_queue.sending.jobs import Outcome

    send(receiver, n)
    now = timezone.now()
    rows = list(ScheduledActivity.objects.order_by("id"))
    for age, row in enumerate(reversed(rows)):
        ScheduledActivity.objects.filter(id=row.id).update(
            next_attempt_at=now - timedelta(seconds=age + 1))
    (job,) = store.claim("w1", 1, 30)
    store.resolve("w1", [Outcome(job, State.RETRYING, error="timed out", host_fault=True,
                                 retry_at=now + timedelta(minutes=30))],
                  defer_for=600.0, probes=2, **RESOLVE)
    return rows[1:]  # the rows that did not time out, oldest first


RESOLVE = {"circuit_threshold": 5, "circuit_cooldown": 10.0, "cooldown_max": 3600.0}


def test_a_failing_hosts_backlog_waits_for_its_answer_but_for_probes(receiver):
    rest = failing_host_backlog(receiver, 6)
    until = Host.objects.get().deferred_until
    assert until > timezone.now() + timedelta(minutes=9)
    assert {r.id for r in ScheduledActivity.objects.filter(next_attempt_at=until)} == {
        r.id for r in rest[2:]}  # the two oldest stay due: they are the next probes


@pytest.mark.parametrize("answer", [202, 410])
def test_any_worker_that_hears_the_host_answer_brings_its_backlog_back(receiver, answer):
    from activity_queue.sending import queue as store
    from activity_queue.sending.jobs import Job, Outcome

    rest = failing_host_backlog(receiver, 6)
    before = timezone.now()
    # Another worker's probe is answered, with a success or not: the host is alive.
    job = Job(0, receiver.url("/inbox/"), receiver.base, 0, False, "Create", "a", "", b"{}")
    verdict = State.SENT if answer == 202 else State.FAILED
    store.resolve("w2", [Outcome(job, verdict, status_code=answer)], defer_for=600.0,
                  probes=2, **RESOLVE)
    waiting = ScheduledActivity.objects.filter(id__in=[r.id for r in rest],
                                               next_attempt_at__gt=timezone.now())
    assert not waiting.exists()
    assert ScheduledActivity.objects.filter(next_attempt_at__gte=before).count() == 4
    assert not Host.objects.filter(deferred_until__isnull=False).exists()


def test_resuming_a_host_brings_its_waiting_backlog_back(receiver):
    from activity_queue.operations import actions as operations

    failing_host_backlog(receiver, 6)
    assert operations.resume_hosts([receiver.base]) == 1
    assert not ScheduledActivity.objects.filter(
        attempts=0, next_attempt_at__gt=timezone.now()).exists()


def test_a_fresh_worker_also_probes_once(receiver, worker):
    receiver.rules["/inbox/"] = Rule(status=503)
    send(receiver, 4)
    Host.objects.create(host=receiver.base, consecutive_failures=3, trips=1,
                        paused_until=timezone.now() - timedelta(seconds=1))
    with aq_settings(**CIRCUIT):
        report = worker().run_once(timeout=20)
    # The probe allowance is applied in the claim itself: nothing is leased and handed back.
    assert (report.claimed, report.released, report.retried) == (1, 0, 1)
    assert receiver.calls["/inbox/"] == 1
    assert attempts() == [0, 0, 0, 1]


def test_pause_is_capped_by_backoff_max(receiver, worker):
    receiver.rules["/inbox/"] = Rule(status=500)
    send(receiver, 1)
    Host.objects.create(host=receiver.base, consecutive_failures=30, trips=20,
                        paused_until=timezone.now() - timedelta(seconds=1))
    with aq_settings(**{**CIRCUIT, "BACKOFF_MAX": 600.0}):
        before = timezone.now()
        worker().run_once(timeout=20)
    host = Host.objects.get()
    assert host.trips == 21
    assert before + timedelta(seconds=600) <= host.paused_until
    assert host.paused_until <= timezone.now() + timedelta(seconds=600)


def test_success_resets_the_count(receiver, worker):
    receiver.rules["/inbox/"] = Rule(sequence=[503, 503, 202])
    send(receiver, 1)
    with aq_settings(**CIRCUIT):
        w = worker()
        w.run_once(timeout=20)
        make_due()
        w.run_once(timeout=20)
        assert Host.objects.get().consecutive_failures == 2
        make_due()
        assert w.run_once(timeout=20).sent == 1
    assert not Host.objects.exists()


def test_refusals_are_not_the_hosts_fault(receiver, worker):
    """404s are about one inbox, not the host's health: they never open the circuit."""
    receiver.rules["/inbox/"] = Rule(status=404)
    send(receiver, 5)
    with aq_settings(**CIRCUIT):
        assert worker().run_once(timeout=20).failed == 5
    assert not Host.objects.exists()


def test_other_hosts_keep_flowing(receiver, worker):
    send(receiver, 2, path="/healthy/")
    other = "http://127.0.0.1:9"
    Host.objects.create(host=other, consecutive_failures=3, trips=1,
                        paused_until=timezone.now() + timedelta(seconds=600))
    enqueue({"type": "Create", "object": "https://here.example/notes/x"},
            to=other + "/inbox/")
    with aq_settings(**CIRCUIT):
        report = worker().run_once(timeout=20)
    assert (report.claimed, report.sent) == (2, 2)
    assert ScheduledActivity.objects.get().host == other


def test_an_internationalised_host_has_one_circuit(worker):
    """The circuit opened under the punycode name also holds the Unicode spelling back."""
    Host.objects.create(host="https://xn--bcher-kva.example", consecutive_failures=3, trips=1,
                        paused_until=timezone.now() + timedelta(seconds=600))
    enqueue({"type": "Create", "object": "https://here.example/notes/idn"},
            to=["https://bücher.example/inbox", "https://BÜCHER.example/other"])
    with aq_settings(**CIRCUIT):
        report = worker().run_once(timeout=20)
    assert report.claimed == 0
    assert attempts() == [0, 0]
    assert Host.objects.count() == 1


def test_the_log_says_when_a_host_is_paused_and_when_it_recovers(receiver, worker, caplog):
    receiver.rules["/inbox/"] = Rule(status=503)
    with aq_settings(**CIRCUIT), caplog.at_level(logging.INFO, logger="activity_queue"):
        w = worker()
        send(receiver, 3)
        w.run_once(timeout=20)
        receiver.rules["/inbox/"] = Rule(status=202)
        end_pause(receiver.base)
        assert w.run_once(timeout=20).sent == 1
        w.run_once(timeout=20)  # the backlog flows; the closed circuit is not logged again
    logged = [(r.levelno, r.getMessage()) for r in caplog.records
              if r.name == "activity_queue.sending.worker"]
    assert logged == [
        (logging.WARNING, f"activity_queue: pausing deliveries to {receiver.base}"),
        (logging.WARNING, f"activity_queue: {receiver.base} answered again after a pause; "
                          "circuit closed, deliveries resumed")]
