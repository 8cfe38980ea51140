"""The in-process worker thread (backends.thread), its autostart rules, and a real runserver."""

import itertools
import logging
import threading
import urllib.error
import urllib.request

import pytest
from django.db import transaction
from django.test import override_settings

from activity_queue import enqueue
from activity_queue.conf import get_config
from activity_queue.models import Activity, ScheduledActivity
from activity_queue.sending.backends import thread

from ..support.helpers import wait_until
from ..support.processes import free_port
from ..support.receiver import Rule

pytestmark = pytest.mark.django_db(transaction=True)

SLOW_POLLING = {"ALLOW_PRIVATE_ADDRESSES": True, "TIMEOUT": 2.0, "POLL_INTERVAL": 60.0}


@pytest.fixture
def inprocess():
    """The thread backend with a 60 s poll, so only wake-ups explain a prompt delivery."""
    with override_settings(ACTIVITY_QUEUE=SLOW_POLLING):
        get_config.cache_clear()
        try:
            yield thread
        finally:
            thread.stop()
            thread._autostart = False
    get_config.cache_clear()


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "activity-queue-worker"]


_notes = itertools.count()


def send(receiver, n: int = 1, path: str = "/inbox/") -> list[str]:
    with transaction.atomic():  # a new object each time, or the second would be redundant
        rows = [enqueue({"type": "Create",
                         "object": f"https://origin.example/notes/{next(_notes)}"},
                        to=receiver.url(path))[0] for _ in range(n)]
    return [row.activity_id for row in rows]


def test_a_refused_configuration_keeps_the_worker_down_and_says_so_once(receiver, caplog):
    with override_settings(ACTIVITY_QUEUE={**SLOW_POLLING, "WORKERS": "64"}):
        get_config.cache_clear()
        try:
            with caplog.at_level(logging.INFO, logger="activity_queue"):
                assert thread.start() is None
                thread.allow_autostart()
                send(receiver)  # a commit wakes, or starts, the worker
                thread.ensure_started()  # a request in a server that runs no checks
                assert thread.start() is None
            assert thread.running() is None and worker_threads() == []
        finally:
            thread.stop()
            thread._autostart = False
    get_config.cache_clear()
    logged = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert logged == [(logging.ERROR, (
        "activity_queue: the in-process worker does not start, the configuration is refused:\n"
        "(activity_queue.E002) ACTIVITY_QUEUE['WORKERS'] = '64' has type str. "
        "HINT: WORKERS must be an integer >= 1 (default 64)."))]
    assert receiver.received == [] and ScheduledActivity.objects.count() == 1


def test_start_is_idempotent_and_stop_ends_the_thread(inprocess):
    first = inprocess.start()
    assert inprocess.start() is first
    assert inprocess.running() is first
    assert len(worker_threads()) == 1
    inprocess.stop()
    assert inprocess.running() is None
    assert worker_threads() == []
    inprocess.stop()  # stopping twice is harmless


def test_a_commit_wakes_the_idle_worker(receiver, inprocess):
    inprocess.start()
    first = send(receiver)
    assert receiver.wait_for(lambda r: len(r.received) == 1, timeout=10)
    assert wait_until(lambda: Activity.objects.filter(activity_id__in=first).exists())
    # The worker now sleeps for POLL_INTERVAL (60 s) unless the commit wakes it.
    second = send(receiver)
    assert receiver.wait_for(lambda r: len(r.received) == 2, timeout=10)
    assert receiver.bodies()[1]["id"] == second[0]


def test_a_rolled_back_enqueue_does_not_start_or_wake_anyone(receiver, inprocess):
    inprocess.allow_autostart()
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue({"type": "Create", "object": "https://origin.example/1"},
                to=receiver.url("/inbox/"))
        raise RuntimeError("roll back")
    assert inprocess.running() is None


def test_with_autostart_allowed_the_first_commit_starts_the_worker(receiver, inprocess):
    inprocess.allow_autostart()
    assert inprocess.running() is None
    send(receiver)
    assert inprocess.running() is not None
    assert receiver.wait_for(lambda r: len(r.received) == 1, timeout=10)


def test_stop_hands_back_in_flight_rows(receiver, inprocess):
    receiver.rules["/slow/"] = Rule(delay=5.0)
    send(receiver, 10, path="/slow/")
    inprocess.start()
    assert receiver.wait_for(lambda r: len(r.received) >= 1, timeout=10)
    assert ScheduledActivity.objects.exclude(leased_by="").exists()
    inprocess.stop(timeout=0.5)
    assert worker_threads() == []
    assert ScheduledActivity.objects.count() == 10
    assert not ScheduledActivity.objects.exclude(leased_by="").exists()
    assert not ScheduledActivity.objects.filter(leased_until__isnull=False).exists()
    # A request cut off at the stop may have reached the receiver: it counts as an attempt.
    attempts = list(ScheduledActivity.objects.values_list("attempts", flat=True))
    assert set(attempts) <= {0, 1} and sum(attempts) >= len(receiver.received) >= 1


# -- a real runserver ---------------------------------------------------------------

@pytest.mark.parametrize("reload", [False, True], ids=["noreload", "autoreloader"])
def test_runserver_revives_rows_enqueued_before_it_started(receiver, spawn, reload):
    ids = send(receiver, 5)
    port = free_port()
    args = ["runserver", f"127.0.0.1:{port}", *([] if reload else ["--noreload"])]
    server = spawn(*args, queue={"AUTOSTART": True, "POLL_INTERVAL": 0.2})
    assert receiver.wait_for(lambda r: len(r.received) >= 5, timeout=30), server.stderr()
    assert wait_until(lambda: not ScheduledActivity.objects.exists(), timeout=10)
    assert sorted(b["id"] for b in receiver.bodies()) == sorted(ids)
    assert server.alive()
    started = [line for line in server.stderr().splitlines()
               if " started: in-process, WORKERS=64, PER_HOST=8, backend thread" in line]
    assert len(started) == 1, "exactly one process of the server runs the worker"


def test_another_server_starts_the_worker_at_its_first_request(receiver, spawn):
    ids = send(receiver, 3)
    port = free_port()
    server = spawn(str(port), program="tests/support/wsgi_server.py",
                   queue={"AUTOSTART": True, "POLL_INTERVAL": 0.2})
    assert wait_until(lambda: "serving" in server.stdout(), timeout=30), server.stderr()
    # Set up and listening, but no request yet: a pre-forking server's parent
    # would be at this point, and must not run the worker.
    assert "started" not in server.stderr()
    assert receiver.received == []
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/no-such-page/", timeout=10)
    assert answer.value.code == 404
    assert receiver.wait_for(lambda r: len(r.received) == 3, timeout=20), server.stderr()
    assert sorted(b["id"] for b in receiver.bodies()) == sorted(ids)
