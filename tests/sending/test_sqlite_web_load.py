"""A busy multi-threaded web process on SQLite with the worker writing beside it.

gunicorn (8 threads) serves a view that writes a row and enqueues an activity to three
inboxes in one transaction (:mod:`tests.support.site`); client threads POST to it for a
few seconds while a worker delivers, as a dedicated ``activity_worker`` or in-process.
The database has the options the README recommends and a log of deliveries already made,
as a site that has federated for a while has. No request may fail, nothing may log
"database is locked", and every activity must arrive at every inbox.
"""

import http.client
import json
import sqlite3
import threading
import time

import pytest
from django.db import connection

from activity_queue.checks import SQLITE_OPTIONS
from activity_queue.models import Activity, ScheduledActivity

from ..support.helpers import stored, wait_until
from ..support.processes import free_port
from ..support.receiver import Receiver

pytestmark = [
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's single write lock"),
    pytest.mark.timeout(90),
]

SECONDS = 4.0
CLIENTS = 12
#: Deliveries already logged: 30 days of a small site's federation.
DELIVERED = 100_000
LOCKED = "database is locked"


def delivered_before(n: int) -> None:
    """``n`` deliveries logged as sent, to inboxes and about objects of their own."""
    log = Activity._meta.db_table
    payload = stored({"type": "Create"})
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < %s)
            INSERT INTO {log} (activity_id, activity_type, object_id, inbox, host, payload_id,
                               direction, status, status_code, error, response_excerpt,
                               attempts, created_at, resolved_at)
            SELECT 'urn:old:' || n, 'Create', 'https://old.example/o/' || n,
                   'https://old' || (n % 50) || '.example/inbox/',
                   'https://old' || (n % 50) || '.example', %s, %s, 'sent', 202, '', '',
                   1, '2026-01-01 00:00:00', '2026-01-01 00:00:01'
            FROM i
            """,
            [n, payload.pk, Activity.Direction.OUTBOUND.value])


def post_for(port: int, inboxes: list[str], seconds: float) -> dict:
    """``CLIENTS`` threads POSTing over keep-alive connections until ``seconds`` pass."""
    body = json.dumps(inboxes).encode()
    results = {"status": [], "failures": [], "ids": []}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        while time.monotonic() < stop_at:
            try:
                conn.request("POST", "/test-publish/", body,
                             {"Content-Type": "application/json"})
                answer = conn.getresponse()
                data = answer.read()
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    results["failures"].append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
                continue
            with lock:
                results["status"].append(answer.status)
                if answer.status == 201:
                    results["ids"].append(json.loads(data)["id"])
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.fixture
def inboxes():
    servers = [Receiver().start() for _ in range(3)]
    yield servers
    for server in servers:
        server.stop()


@pytest.mark.parametrize("mode", ["dedicated", "in-process"])
def test_a_busy_site_and_its_worker_never_meet_a_locked_database(spawn, inboxes, mode):
    pytest.importorskip("gunicorn")
    delivered_before(DELIVERED)
    port = free_port()
    env = {"AQ_PROC_DB_OPTIONS": json.dumps(SQLITE_OPTIONS)}
    queue = {"AUTOSTART": mode == "in-process", "POLL_INTERVAL": 0.2}
    server = spawn("gunicorn", "--workers", "1", "--threads", "8", "--worker-class", "gthread",
                   "--bind", f"127.0.0.1:{port}", "--timeout", "60",
                   "django.core.wsgi:get_wsgi_application()",
                   program="-m", queue=queue, env=env)
    processes = [server]
    if mode == "dedicated":
        processes.append(spawn("activity_worker", queue=queue, env=env))

    def answers() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/no-such-page/")
            return conn.getresponse().status == 404
        except OSError:
            return False

    assert wait_until(answers, timeout=30), server.stderr()
    urls = [r.url("/inbox/") for r in inboxes]
    results = post_for(port, urls, SECONDS)

    logs = "\n".join(p.stdout() + p.stderr() for p in processes)
    assert results["failures"] == [], logs[-3000:]
    assert [s for s in results["status"] if s != 201] == [], logs[-3000:]
    assert len(results["ids"]) > 10 * CLIENTS, len(results["ids"])  # the site was busy
    everything = 3 * len(results["ids"])
    assert wait_until(lambda: sum(len(r.received) for r in inboxes) >= everything,
                      timeout=30), (sum(len(r.received) for r in inboxes), everything)
    assert wait_until(lambda: not ScheduledActivity.objects.exists(), timeout=10)
    for r in inboxes:
        assert sorted(b["id"] for b in r.bodies()) == sorted(results["ids"])
    logs = "\n".join(p.stdout() + p.stderr() for p in processes)
    assert LOCKED not in logs, logs[-3000:]
    assert all(p.alive() for p in processes), logs[-3000:]


def test_a_worker_kept_from_the_lock_past_its_timeout_waits_and_carries_on(
        transactional_db, receiver, worker, caplog):
    """The safety net: a step that meets "database is locked" is tried again after a pause,
    with a warning and no traceback, and nothing it held is lost."""
    from django.db.backends.signals import connection_created

    from activity_queue import enqueue

    def short_timeout(sender, connection, **kwargs):
        if threading.current_thread().name == "impatient":
            connection.connection.execute("PRAGMA busy_timeout = 100")

    for i in range(5):
        enqueue({"type": "Create", "object": f"https://here.example/notes/{i}"},
                to=receiver.url("/inbox/"))
    holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    w = worker()
    connection_created.connect(short_timeout)
    runner = threading.Thread(target=w.run_forever, name="impatient")
    try:
        with caplog.at_level("INFO", logger="activity_queue"):
            runner.start()
            assert wait_until(lambda: "stayed busy" in caplog.text, timeout=10)
            holder.rollback()
            assert receiver.wait_for(lambda r: len(r.received) == 5, timeout=20)
            assert wait_until(lambda: not ScheduledActivity.objects.exists(), timeout=10)
    finally:
        holder.close()
        w.stop()
        runner.join(30)
        connection_created.disconnect(short_timeout)
    warnings = [r for r in caplog.records if "stayed busy" in r.getMessage()]
    assert warnings and all(r.levelname == "WARNING" and not r.exc_info for r in warnings)
    assert "step failed" not in caplog.text
