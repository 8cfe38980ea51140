"""Workers survive a restart and a crash of their PostgreSQL server.

PostgreSQL only, on a server of the module's own (tests/support/cluster.py) that the tests
restart and crash while a worker delivers to a loopback receiver.

What is allowed at the receiver: with one worker that lives through the outage, nothing.
The worker keeps what it delivered while the database was away and writes it on its
return; an outage shorter than the lease leaves its rows its own. A second POST of one
activity needs a worker that dies between a POST and the write of its outcome (tests of
SIGKILL in test_worker_process.py), or rows taken over after their lease ran out.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from activity_queue import enqueue
from activity_queue.conf import get_config
from activity_queue.models import Activity, Host, PendingDiscovery, ScheduledActivity
from activity_queue.sending.backends import thread

from ..support import cluster as pg
from ..support.helpers import aq_settings, wait_until
from ..support.processes import Proc, environment
from ..support.receiver import Rule

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="restarts a PostgreSQL server; run with AQ_TEST_DB=postgres"),
    pytest.mark.skipif(pg.available() is not None, reason=str(pg.available())),
]

#: Seconds without a server: longer than the first waits of a doubling backoff
#: (1 + 2 s), so a worker that backs off instead of polling misses the bound.
DOWN = 3.0
#: A worker writes again within this many seconds of the server's return.
RECOVERY_BOUND = 2.0
QUEUE = {"PER_HOST": 4, "WORKERS": 16, "BATCH_SIZE": 50, "LEASE": 20.0, "POLL_INTERVAL": 0.2,
         "TIMEOUT": 2.0}
N = 300


@pytest.fixture(scope="module")
def server(django_db_blocker):
    with pg.started_cluster() as cluster, django_db_blocker.unblock(), \
            pg.default_database_on(cluster):
        call_command("migrate", verbosity=0)
        yield cluster


@pytest.fixture
def db_on_server(server, django_db_blocker):
    with django_db_blocker.unblock(), pg.default_database_on(server):
        for model in (ScheduledActivity, Activity, Host, PendingDiscovery):
            model.objects.all().delete()
        yield server


@pytest.fixture
def start_worker(db_on_server, tmp_path):
    started: list[Proc] = []

    def start(**queue) -> Proc:
        env = environment({**QUEUE, **queue}, AQ_PG_PORT=str(db_on_server.port),
                          AQ_TEST_DB="postgres")
        proc = Proc(["activity_worker"], env, tmp_path, f"w{len(started)}")
        started.append(proc)
        assert wait_until(lambda: "running" in proc.stdout() or not proc.alive(), 30)
        assert proc.alive(), proc.stderr()
        return proc

    yield start
    for proc in started:
        proc.kill()


def enqueue_many(inbox: str, n: int = N) -> list[str]:
    ids = [f"https://origin.example/activities/{i}" for i in range(n)]
    with transaction.atomic():
        for i, activity_id in enumerate(ids):
            enqueue({"id": activity_id, "type": "Create",
                     "object": f"https://origin.example/notes/{i}"}, to=inbox)
    return ids


def logged(cluster) -> int:
    """Log rows, on a connection of its own (the test's may have died with the server)."""
    import psycopg

    try:
        with psycopg.connect(dbname=pg.DB_NAME, connect_timeout=2, **cluster.dsn) as conn:
            return conn.execute(f"SELECT count(*) FROM {Activity._meta.db_table}").fetchone()[0]
    except psycopg.OperationalError:
        return -1


def outage(cluster, kind: str) -> float:
    if kind == "restart":
        return cluster.restart(down=DOWN)
    return cluster.crash(kind, down=DOWN)


def check_delivered_once(receiver, ids: list[str], path: str = "/inbox/") -> None:
    connection.close()  # opened before the outage
    assert wait_until(lambda: not ScheduledActivity.objects.exists(), 30)
    posts = Counter(body["id"] for body in receiver.bodies(path))
    assert set(posts) == set(ids), "every activity reached the receiver"
    assert max(posts.values()) == 1, f"POSTed twice: {[a for a, n in posts.items() if n > 1]}"
    log = Counter(Activity.objects.values_list("activity_id", "status"))
    assert log == Counter({(a, "sent"): 1 for a in ids}), "one outcome per activity"


@pytest.mark.parametrize("kind", ["restart", "immediate", "kill"])
def test_the_dedicated_worker_survives_its_server_going_away(receiver, start_worker, kind,
                                                             db_on_server):
    cluster = db_on_server
    receiver.rules["/inbox/"] = Rule(delay=0.04)
    ids = enqueue_many(receiver.url("/inbox/"))
    proc = start_worker()
    assert receiver.wait_for(lambda r: len(r.received) >= 60, 30), proc.stderr()

    back = outage(cluster, kind)
    before = logged(cluster)
    assert wait_until(lambda: logged(cluster) > before, RECOVERY_BOUND, interval=0.05), (
        f"nothing written within {RECOVERY_BOUND} s of the server's return\n{proc.stderr()}")
    recovery = time.monotonic() - back
    assert len(receiver.received) < N, "the outage came too late to test anything"

    check_delivered_once(receiver, ids)
    assert "the database answers again" in proc.stderr()
    assert proc.alive()
    proc.send(signal.SIGTERM)
    assert proc.wait(15) == 0, proc.stderr()
    assert recovery < RECOVERY_BOUND


def test_two_workers_do_not_send_each_others_rows_after_an_outage_longer_than_the_lease(
        receiver, start_worker, db_on_server):
    """Their leases run out while the server is away: a worker stops starting requests
    before its leases end, and on the server's return writes and renews what it holds
    before it claims, so neither takes and sends again what the other sent."""
    cluster = db_on_server
    # Slow answers: each worker still has rows waiting for a slot when its leases end.
    receiver.rules["/inbox/"] = Rule(delay=0.2)
    ids = enqueue_many(receiver.url("/inbox/"))
    workers = [start_worker(LEASE=4.0) for _ in range(2)]
    assert receiver.wait_for(lambda r: len(r.received) >= 20, 30)
    cluster.restart(down=6.0)
    check_delivered_once(receiver, ids)
    assert all("the database answers again" in w.stderr() for w in workers)


@pytest.fixture
def inprocess():
    with aq_settings(**QUEUE):
        get_config.cache_clear()
        try:
            yield thread
        finally:
            thread.stop()
    get_config.cache_clear()


def test_the_in_process_worker_survives_a_crash_of_its_server(receiver, inprocess,
                                                              db_on_server):
    cluster = db_on_server
    receiver.rules["/inbox/"] = Rule(delay=0.04)
    ids = enqueue_many(receiver.url("/inbox/"))
    inprocess.start()
    assert receiver.wait_for(lambda r: len(r.received) >= 60, 30)
    back = outage(cluster, "immediate")
    before = logged(cluster)
    assert wait_until(lambda: logged(cluster) > before, RECOVERY_BOUND, interval=0.05)
    assert time.monotonic() - back < RECOVERY_BOUND
    assert len(receiver.received) < N
    check_delivered_once(receiver, ids)


def test_a_celery_run_waits_for_its_server_within_its_deadline(receiver, worker, db_on_server):
    """What the Celery task runs (Worker.run_until_idle): a crash of the server mid-run is
    waited out within the run's deadline, and the run still ends with everything written."""
    cluster = db_on_server
    receiver.rules["/inbox/"] = Rule(delay=0.04)
    ids = enqueue_many(receiver.url("/inbox/"))
    with aq_settings(**QUEUE):
        w = worker()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            w.run_until_idle(deadline=time.monotonic() + 30)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failure.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    assert receiver.wait_for(lambda r: len(r.received) >= 60, 30)
    outage(cluster, "immediate")
    runner.join(40)
    assert not runner.is_alive() and not failure, failure
    check_delivered_once(receiver, ids)
