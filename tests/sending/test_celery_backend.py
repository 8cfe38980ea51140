"""The Celery backend with a real Celery worker (subprocess) on the real Redis broker.

Deliveries go over loopback HTTP to :class:`tests.support.receiver.Receiver`; the
worker uses the test database through ``tests.proc_settings``. Skipped only
when Celery is not installed; a Redis that does not answer is a failure.
"""

import itertools
import signal
import threading

import pytest

pytest.importorskip("celery")

import redis  # noqa: E402  (celery[redis] brings it)

from activity_queue.models import Activity, ScheduledActivity  # noqa: E402
from activity_queue.sending.backends import celery as celery_backend  # noqa: E402
from activity_queue.sending.backends.marks import LocalMarks, RedisMarks  # noqa: E402

from .. import celery_app  # noqa: E402  (the site's Celery app: current in this process)
from ..support.helpers import aq_settings, send, sent, wait_until  # noqa: E402
from ..support.receiver import Rule  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

_names = itertools.count()


@pytest.fixture
def broker():
    """The Redis broker, with this run's queue and the backend's marks empty."""
    client = redis.Redis.from_url(celery_app.REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis at {celery_app.REDIS_URL} is not answering (start redis-server; "
                    "scripts/test does)")

    def reset():
        client.delete(celery_app.QUEUE)
        celery_backend.runs.marks("default").forget()

    reset()
    with aq_settings(BACKEND="celery"):
        yield client
    reset()


@pytest.fixture
def celery_worker(spawn, tmp_path, broker):
    """Start ``celery -A tests.celery_app worker`` (threads pool unless asked; beat if asked)."""

    def start(*, beat: bool = False, queue: dict | None = None, pool: str = "threads"):
        n = next(_names)
        args = ["celery", "-A", "tests.celery_app", "worker", f"--pool={pool}",
                f"--concurrency={2 if pool == 'prefork' else 4}", "--loglevel=info",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-n", f"aq-test-{n}@%h"]
        if beat:
            args += ["--beat", "--schedule", str(tmp_path / f"beat-{n}")]
        return spawn(*args, queue={"BACKEND": "celery", **(queue or {})}, program="-m")

    return start


@pytest.mark.parametrize("pool", ["threads", "prefork", "solo"])
def test_an_enqueue_is_delivered_by_a_celery_worker_and_logged(receiver, celery_worker, pool):
    proc = celery_worker(pool=pool)
    activity_id = send(receiver.url("/inbox/"))
    assert wait_until(lambda: sent(activity_id), timeout=30), proc.stderr()
    assert [body["id"] for body in receiver.bodies("/inbox/")] == [activity_id]
    logged = sent(activity_id)
    assert logged.attempts == 1 and logged.status_code == 202
    assert not ScheduledActivity.objects.exists()
    later = send(receiver.url("/inbox/"))  # the same process's worker, kept between tasks
    assert wait_until(lambda: sent(later), timeout=30), proc.stderr()
    proc.send(signal.SIGTERM)  # warm shutdown
    assert proc.wait(30) == 0, proc.stderr()
    assert not ScheduledActivity.objects.exists()


def test_a_rolled_back_enqueue_sends_nothing(receiver, broker, celery_worker):
    send(receiver.url("/rolled-back/"), rollback=True)
    assert not ScheduledActivity.objects.exists()
    assert broker.llen(celery_app.QUEUE) == 0, "a message was sent for a rolled-back enqueue"

    proc = celery_worker()
    marker = send(receiver.url("/committed/"))
    assert wait_until(lambda: sent(marker), timeout=30), proc.stderr()
    assert receiver.calls == {"/committed/": 1}


def test_a_burst_of_enqueues_sends_one_message(receiver, broker, celery_worker):
    ids = [send(receiver.url("/burst/")) for _ in range(20)]  # 20 commits
    assert broker.llen(celery_app.QUEUE) == 1

    proc = celery_worker()
    assert wait_until(lambda: Activity.objects.filter(status="sent").count() == 20,
                      timeout=30), proc.stderr()
    assert sorted(body["id"] for body in receiver.bodies("/burst/")) == sorted(ids)
    # The run cleared the mark before claiming: the next commit sends again.
    later = send(receiver.url("/burst/"))
    assert wait_until(lambda: sent(later), timeout=30), proc.stderr()


def test_a_retry_due_later_is_delivered_without_a_new_enqueue(receiver, celery_worker):
    receiver.rules["/flaky/"] = Rule(sequence=[503, 202])
    proc = celery_worker()  # no beat: the task sets its own timer for the retry
    activity_id = send(receiver.url("/flaky/"))
    assert wait_until(lambda: ScheduledActivity.objects.filter(attempts=1).exists(),
                      timeout=30), proc.stderr()
    assert wait_until(lambda: sent(activity_id), timeout=30), proc.stderr()
    assert sent(activity_id).attempts == 2
    assert receiver.calls["/flaky/"] == 2


def test_a_lost_message_is_recovered_by_the_beat_entry(receiver, broker, celery_worker):
    activity_id = send(receiver.url("/inbox/"))
    assert broker.llen(celery_app.QUEUE) == 1
    broker.delete(celery_app.QUEUE)  # the broker lost the wake-up
    assert ScheduledActivity.objects.filter(payload__activity_id=activity_id).exists()

    proc = celery_worker(beat=True)
    assert wait_until(lambda: sent(activity_id), timeout=30), proc.stderr()
    assert receiver.calls == {"/inbox/": 1}


def test_rows_of_a_killed_celery_worker_come_back_when_their_lease_ends(receiver,
                                                                        celery_worker):
    answering = threading.Event()
    receiver.rules["/stuck/"] = Rule(hold=answering.is_set)
    queue = {"LEASE": 2.0}
    first = celery_worker(queue=queue)
    activity_id = send(receiver.url("/stuck/"))
    assert receiver.wait_for(lambda r: r.calls.get("/stuck/") == 1, timeout=30), first.stderr()
    assert ScheduledActivity.objects.exclude(leased_by="").exists()
    first.kill()  # SIGKILL, mid-delivery: the message was taken, the row is leased
    assert first.popen.returncode == -signal.SIGKILL
    answering.set()
    assert ScheduledActivity.objects.exclude(leased_by="").exists()

    second = celery_worker(beat=True, queue=queue)
    assert wait_until(lambda: sent(activity_id), timeout=30), second.stderr()
    # At-least-once: the request on the wire when the worker died may have arrived too.
    assert {body["id"] for body in receiver.bodies("/stuck/")} == {activity_id}
    assert Activity.objects.filter(activity_id=activity_id).count() == 1


# -- the marks that keep the broker from flooding ---------------------------------------

@pytest.fixture(params=["redis", "local"])
def marks(request, broker):
    if request.param == "local":
        yield LocalMarks()
        return
    made = RedisMarks(broker, f"activity_queue:test-{next(_names)}")
    yield made
    made.forget()


def test_a_wake_mark_is_set_once_until_cleared(marks):
    first = marks.set_wake()
    again = marks.set_wake()
    marks.clear_wake()
    if isinstance(marks, LocalMarks):  # no shared state: every enqueue sends
        assert (first, again, marks.set_wake()) == (True, True, True)
    else:
        assert (first, again, marks.set_wake()) == (True, False, True)


@pytest.mark.parametrize(("pending", "now", "asked", "sets"), [
    (None, 100.0, 150.0, True),  # no timer yet
    (150.0, 100.0, 160.0, False),  # one fires first: it will set the next
    (150.0, 100.0, 150.0, False),  # the same time
    (150.0, 100.0, 120.0, True),  # an earlier one is needed
    (90.0, 100.0, 160.0, True),  # the pending one has fired (or was lost)
])
def test_a_timer_is_set_unless_one_fires_first(marks, pending, now, asked, sets):
    if pending is not None:
        assert marks.set_timer(pending, pending - 10)
    assert marks.set_timer(asked, now) is sets


def test_eager_mode_delivers_at_commit_and_sets_no_timer(receiver, broker, caplog):
    """Sites that test with ``task_always_eager``: an eager timer would run at once."""
    receiver.rules["/flaky/"] = Rule(sequence=[503, 202])
    celery_app.app.conf.task_always_eager = True
    try:
        activity_id = send(receiver.url("/flaky/"))  # delivered inside the commit
        assert receiver.calls == {"/flaky/": 1}
        row = ScheduledActivity.objects.get(payload__activity_id=activity_id)
        assert row.attempts == 1 and row.last_status == 503
        assert broker.llen(celery_app.QUEUE) == 0
        assert broker.get(celery_backend.runs.marks("default").timer_key) is None
        assert not [r for r in caplog.records if r.levelname == "WARNING"]
    finally:
        celery_app.app.conf.task_always_eager = False
        celery_backend.runs.shut_down()
