"""``manage.py activity_worker`` as a real subprocess: crashes, signals, --burst, usage."""

import signal
from collections import Counter

import pytest
from django.db import connection, transaction

from activity_queue import enqueue
from activity_queue.models import Activity, ScheduledActivity

from ..support.helpers import wait_until
from ..support.receiver import Rule

pytestmark = pytest.mark.django_db(transaction=True)


def enqueue_many(n: int, inbox: str, *, delay: float = 0, tag: str = "a") -> list[str]:
    """``n`` activities with distinct ids, committed; returns the ids."""
    ids = [f"https://origin.example/activities/{tag}-{delay}-{i}" for i in range(n)]
    with transaction.atomic():
        for i, activity_id in enumerate(ids):
            enqueue({"id": activity_id, "type": "Create",  # distinct objects: not redundant
                     "object": f"https://origin.example/notes/{tag}-{delay}-{i}"},
                    to=inbox, delay=delay)
    return ids


def sent_per_activity() -> Counter:
    return Counter(Activity.objects.filter(status="sent").values_list("activity_id", flat=True))


def test_rows_of_a_killed_worker_come_back_when_its_lease_expires(receiver, spawn):
    receiver.rules["/slow/"] = Rule(delay=0.05)
    ids = enqueue_many(200, receiver.url("/slow/"))
    queue = {"LEASE": 2.0, "PER_HOST": 8, "POLL_INTERVAL": 0.2}
    first = spawn("activity_worker", queue=queue)
    assert receiver.wait_for(lambda r: len(r.received) >= 20, timeout=30), first.stderr()
    first.send(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    orphaned = set(ScheduledActivity.objects.exclude(leased_by="")
                   .values_list("payload__activity_id", flat=True))
    assert orphaned, "the worker was killed holding no lease; the test proves nothing"
    assert ScheduledActivity.objects.exists()

    second = spawn("activity_worker", queue=queue)
    assert wait_until(lambda: not ScheduledActivity.objects.exists(), timeout=30), second.stderr()
    second.send(signal.SIGTERM)
    assert second.wait(15) == 0

    sent = sent_per_activity()
    assert sorted(sent) == sorted(ids)
    assert set(sent.values()) == {1}, "one log row per activity, even after a crash"
    # At-least-once: duplicates are allowed at the receiver, losses are not.
    assert {body["id"] for body in receiver.bodies("/slow/")} == set(ids)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_stop_signal_finishes_or_releases_in_flight_rows_and_exits_0(receiver, spawn, signum):
    receiver.rules["/slow/"] = Rule(delay=1.0)
    enqueue_many(40, receiver.url("/slow/"))
    proc = spawn("activity_worker", queue={"PER_HOST": 4})
    assert receiver.wait_for(lambda r: len(r.received) >= 4, timeout=30), proc.stderr()
    assert ScheduledActivity.objects.exclude(leased_by="").exists()
    proc.send(signum)
    assert proc.wait(15) == 0, proc.stderr()
    assert signal.Signals(signum).name in proc.stderr()
    assert f"started: dedicated, WORKERS=64, PER_HOST=4, backend thread, database " \
           f"{connection.vendor}" in proc.stderr()
    assert "stopped" in proc.stdout()

    assert not ScheduledActivity.objects.exclude(leased_by="").exists()
    assert not ScheduledActivity.objects.filter(leased_until__isnull=False).exists()
    # Requests that had started were given time to finish and were logged;
    # the others went back untouched, with no attempt counted.
    sent = Activity.objects.filter(status="sent").count()
    assert sent == len(receiver.received) >= 4
    assert sent + ScheduledActivity.objects.count() == 40
    assert set(ScheduledActivity.objects.values_list("attempts", flat=True)) <= {0}


def test_burst_drains_due_rows_then_exits(receiver, spawn):
    due = enqueue_many(5, receiver.url("/inbox/"))
    later = enqueue_many(2, receiver.url("/inbox/"), delay=3600)
    proc = spawn("activity_worker", "--burst")
    assert proc.wait(30) == 0, proc.stderr()
    summary = proc.stdout().strip().splitlines()[-1]
    assert summary.startswith("activity_worker --burst: 5 sent, 0 to retry, 0 failed")
    assert {body["id"] for body in receiver.bodies()} == set(due)
    assert sorted(ScheduledActivity.objects.values_list("payload__activity_id", flat=True)) == later
    assert not ScheduledActivity.objects.exclude(leased_by="").exists()


def test_burst_counts_what_it_dropped_as_redundant(receiver, spawn, settings):
    """Rows queued past the filter (another way in, or a race) are dropped after claiming."""
    inbox = receiver.url("/inbox/")
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "DROP_REDUNDANT": False}
    for n in range(3):  # three Updates of one object: only the newest is worth sending
        enqueue({"type": "Update", "object": {"@id": "https://origin.example/notes/1",
                                              "name": f"v{n}"}}, to=inbox)
    enqueue_many(2, inbox)
    proc = spawn("activity_worker", "--burst")  # DROP_REDUNDANT is on there, the default
    assert proc.wait(30) == 0, proc.stderr()
    summary = proc.stdout().strip().splitlines()[-1]
    assert summary == ("activity_worker --burst: 3 sent, 0 to retry, 0 failed, 0 deferred, "
                       "2 dropped as redundant, in 2 round(s).")
    assert Activity.objects.filter(status="dropped").count() == 2
    assert [b["object"].get("name") for b in receiver.bodies() if b["type"] == "Update"] == ["v2"]


def test_burst_with_nothing_due_exits_at_once(spawn):
    proc = spawn("activity_worker", "--burst")
    assert proc.wait(30) == 0, proc.stderr()
    assert "0 sent" in proc.stdout()


@pytest.mark.parametrize(("args", "message"), [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--burst", "--max-rounds", "many"], "invalid int value: 'many'"),
    (["--burst", "--max-rounds", "0"], "--max-rounds must be at least 1"),
    (["--max-rounds", "3"], "--max-rounds only applies to --burst"),
])
def test_bad_command_line_is_a_usage_error(spawn, args, message):
    proc = spawn("activity_worker", *args)
    assert proc.wait(30) != 0
    assert message in proc.stderr()
    assert "running" not in proc.stdout()


def _terminate_other_backends() -> int:
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute("SELECT id FROM information_schema.processlist "
                           "WHERE db = DATABASE() AND id <> CONNECTION_ID()")
            others = [row[0] for row in cursor.fetchall()]
            for other in others:
                cursor.execute(f"KILL CONNECTION {int(other)}")
            return len(others)
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return len(cursor.fetchall())


def test_a_dropped_database_connection_is_logged_and_the_worker_goes_on(receiver, spawn):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has no server connection to drop")
    receiver.rules["/slow/"] = Rule(delay=1.0)
    proc = spawn("activity_worker", queue={"POLL_INTERVAL": 0.1})
    assert wait_until(lambda: "running" in proc.stdout(), timeout=30), proc.stderr()
    in_flight = enqueue_many(5, receiver.url("/slow/"))
    assert receiver.wait_for(lambda r: len(r.received) == 5, timeout=20), proc.stderr()
    # The deliveries are still waiting for answers: the worker will write
    # their outcomes on a connection that is gone.
    assert _terminate_other_backends() >= 1
    # Whichever side meets the dead connection first logs it: the claiming step, or (on
    # PostgreSQL) the thread that writes outcomes, which writes them again.
    assert wait_until(lambda: "step failed" in proc.stderr()
                      or "after the writer lost its connection" in proc.stderr(),
                      timeout=20), proc.stderr()
    assert wait_until(lambda: not ScheduledActivity.objects.exists(), timeout=20), proc.stderr()

    later = enqueue_many(3, receiver.url("/inbox/"), tag="later")
    assert receiver.wait_for(lambda r: len(r.received) == 8, timeout=20), proc.stderr()
    assert wait_until(lambda: not ScheduledActivity.objects.exists(), timeout=20)
    assert proc.alive()
    assert sent_per_activity() == Counter(in_flight + later)
    proc.send(signal.SIGTERM)
    assert proc.wait(15) == 0


@pytest.mark.parametrize("flags", [[], ["--skip-checks"]], ids=["checks", "skip-checks"])
def test_a_configuration_the_checks_refuse_never_starts_the_worker(receiver, spawn, flags):
    """With the system checks (Django's) or without them (the command's own refusal)."""
    enqueue_many(1, receiver.url("/inbox/"))
    proc = spawn("activity_worker", *flags, queue={"WORKERS": "64"})
    assert proc.wait(30) == 1
    err = proc.stderr()
    assert "(activity_queue.E002) ACTIVITY_QUEUE['WORKERS'] = '64' has type str." in err
    assert "WORKERS must be an integer >= 1 (default 64)." in err
    assert "Traceback" not in err and "running" not in proc.stdout()
    if flags:
        assert "the worker does not start" in err
    assert receiver.received == [] and ScheduledActivity.objects.count() == 1
