"""What runs inside a benchmark child process, with Django set up on one database.

``python -m bench.tasks '<json task>'`` runs one measurement and prints one
JSON object. One process per measurement keeps CPU time and peak memory
(``ru_maxrss``) per measurement, and lets SQLite and PostgreSQL runs use
different settings.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from activity_queue import enqueue, signals  # noqa: E402
from activity_queue.conf import get_config  # noqa: E402
from activity_queue.lifecycle import State  # noqa: E402
from activity_queue.models import Activity, Host, Payload, ScheduledActivity, pair_key  # noqa: E402
from activity_queue.net.addresses import origin  # noqa: E402
from activity_queue.sending import hosts  # noqa: E402
from activity_queue.sending import queue as store  # noqa: E402
from activity_queue.sending.jobs import Outcome  # noqa: E402
from activity_queue.sending.worker import Worker  # noqa: E402

from .payload import BENCH_KEY_ID, activity, bench_key_pem  # noqa: E402
from .receivers import cpu_seconds  # noqa: E402

FILL_BATCH = 2000


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1],
            "mean": sum(ordered) / len(ordered), "count": len(ordered)}


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by thread name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[thread.name] = out.get(thread.name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def server_cpu() -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends serving this benchmark's database."""
    if connection.vendor != "postgresql":
        return {}
    marker = f" {connection.settings_dict['NAME']} ".encode()
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ") + b" ":
                out[int(entry.name)] = cpu_seconds(int(entry.name))
        except OSError:
            continue
    return out


def reset() -> None:
    """An empty, migrated queue, log and host table."""
    call_command("migrate", verbosity=0, interactive=False)
    tables = [m._meta.db_table for m in (ScheduledActivity, Activity, Host, Payload)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
        elif connection.vendor == "mysql":
            cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
            for table in tables:
                cursor.execute(f"TRUNCATE {table}")
            cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")


APP_TABLES = [m._meta.db_table for m in (ScheduledActivity, Activity, Host, Payload)]


def analyze() -> None:
    """Fresh planner statistics, as autovacuum would have on a site that runs."""
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute(f"ANALYZE TABLE {', '.join(APP_TABLES)}")
            cursor.fetchall()
        else:
            cursor.execute("ANALYZE")


#: Every this-many-th row goes to a black hole, when there are any.
EVERY = 10


def fill(n: int, inboxes: list[str], black_holes: list[str] = (), every: int = EVERY,
         run: str = "r") -> int:
    """A backlog of ``n`` due rows (not timed); every ``every``-th to a black hole if any.

    Returns how many rows go to healthy inboxes.
    """
    now = timezone.now()
    rows: list[ScheduledActivity] = []
    healthy = 0
    for i in range(n):
        if black_holes and i % every == 0:
            inbox = black_holes[(i // every) % len(black_holes)]
        else:
            inbox = inboxes[i % len(inboxes)]
            healthy += 1
        body = activity(i, run)
        # has_predecessor as enqueue() writes it: each activity has an object of its own,
        # so nothing else about it is queued for its inbox or was delivered there.
        payload = Payload.of(body, activity_type=body["type"], object_id=body["object"]["@id"],
                             created_at=now)
        rows.append(ScheduledActivity(
            payload=payload, pair_key=pair_key(payload.object_id, inbox), inbox=inbox,
            host=origin(inbox), next_attempt_at=now, has_predecessor=False,
        ))
        if len(rows) >= FILL_BATCH:
            _fill(rows)
            rows = []
    if rows:
        _fill(rows)
    analyze()
    return healthy


def _fill(rows: list[ScheduledActivity]) -> None:
    with transaction.atomic():
        Payload.objects.bulk_create([row.payload for row in rows])
        for row in rows:
            row.payload = row.payload  # the payload's new primary key
        ScheduledActivity.objects.bulk_create(rows)


def timeline(marks: list[tuple[float, int]], t0: float, seconds: float,
             step: float = 0.5) -> list[int]:
    """Counted deliveries per ``step`` seconds of the run: where a slower run lost its time."""
    slots = [0] * (int(seconds / step) + 1)
    last = 0
    for at, counted in marks:
        index = min(len(slots) - 1, max(0, int((at - t0) / step)))
        slots[index] += counted - last
        last = counted
    return slots


def drain(expected: int, *, receiver_pids: list[int], timeout_s: float,
          counts: Callable[[Outcome], bool] | None = None, **config) -> dict:
    """Time ``Worker.run_forever`` in a thread until ``expected`` counted rows were delivered.

    Rows are counted when ``store.resolve`` returns them as written: its
    transaction has committed (the ``Activity`` row is in, the scheduled row
    gone), so the clock stops when the last counted row is persisted as sent.
    Counting there, not in an ``activity_delivered`` receiver, keeps a signal
    receiver (which a site does not need) out of the cost per delivery.
    """
    done = threading.Event()
    tally = {"sent": 0, "counted": 0, "failed": 0}
    resolve = store.resolve

    marks: list[tuple[float, int]] = []

    def counting_resolve(*args, **kwargs):
        written, *rest = resolve(*args, **kwargs)
        for o in written:
            if o.state is State.SENT:
                tally["sent"] += 1
                if counts is None or counts(o):
                    tally["counted"] += 1
            elif o.state is State.FAILED:
                tally["failed"] += 1
        marks.append((time.perf_counter(), tally["counted"]))
        if tally["counted"] >= expected:
            done.set()
        return written, *rest

    store.resolve = counting_resolve
    worker = Worker(name=f"bench-{os.getpid()}", config=replace(get_config(), **config))
    thread = threading.Thread(target=worker.run_forever, name="bench-worker")
    receiver0 = sum(cpu_seconds(p) for p in receiver_pids)
    server0 = server_cpu()
    cpu0, t0 = time.process_time(), time.perf_counter()
    thread.start()
    # The worker closes its connection when idle (CONN_MAX_AGE), so the backends serving it
    # are sampled every half second: a backend that exits keeps its last reading.
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s
    while not (finished := done.wait(min(0.5, max(0.0, deadline - time.monotonic())))):
        seen.update(server_cpu())
        if time.monotonic() >= deadline:
            break
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    receiver = sum(cpu_seconds(p) for p in receiver_pids) - receiver0
    threads = {name: cpu for name, cpu in thread_cpu().items() if name != "MainThread"}
    seen.update(server_cpu())
    server = sum(cpu - server0.get(pid, 0.0) for pid, cpu in seen.items())
    worker.stop()
    thread.join(60)
    store.resolve = resolve
    counted = tally["counted"]
    return {
        "timeline": timeline(marks, t0, seconds),
        "first_delivery_s": next((at - t0 for at, n in marks if n), None),
        "complete": finished, "delivered": counted, "seconds": seconds,
        "per_second": counted / seconds, "cpu_ms_per_delivery": cpu * 1000 / max(1, counted),
        "cpu_share": cpu / seconds, "failed": tally["failed"],
        "receiver_cpu_share": receiver / seconds if receiver_pids else None,
        "db_server_cpu_ms_per_delivery": (server * 1000 / max(1, counted)
                                          if connection.vendor == "postgresql" else None),
        "thread_cpu_ms_per_delivery": {name: cpu * 1000 / max(1, counted)
                                       for name, cpu in threads.items()},
        "config": {k: getattr(worker.config, k)
                   for k in ("WORKERS", "PER_HOST", "BATCH_SIZE", "TIMEOUT")},
    }


#: The inbox of the paused host in the ``paused_backlog`` run: never contacted.
PAUSED_INBOX = "http://127.0.0.1:9/inbox/"


def throughput(task: dict) -> dict:
    """Persisted deliveries per second through our worker, from a backlog of ``n`` rows.

    ``black_holes``: every tenth row to a host that never answers. ``paused_backlog``:
    that many older rows queued for a host whose circuit is open for the next hour, due
    (the worker moves them out of the due range as it goes) or, with ``paused_moved``,
    already moved to the end of the pause.
    """
    reset()
    n = task["n"]
    black_holes = task.get("black_holes") or []
    paused = task.get("paused_backlog", 0)
    if paused:  # older than the healthy rows: at the front of the due range, as in life
        fill(paused, [PAUSED_INBOX], run="p")
        Host.objects.create(host=origin(PAUSED_INBOX), consecutive_failures=5, trips=1,
                            paused_until=timezone.now() + timedelta(hours=1))
        # As a worker that has run through the pause so far leaves them (not timed).
        while task.get("paused_moved") and hosts.defer_paused(limit=10_000) == 10_000:
            pass
    # With black holes, the same ``n`` healthy rows as the all-healthy run and a tenth of all
    # rows more to the black holes: with fewer healthy rows the run's fixed start-up weighs
    # more, and the ratio measured that too (18,000 against 20,000 healthy rows, no black
    # hole anywhere: 0.96×).
    total = n + -(-n // (EVERY - 1)) if black_holes else n
    healthy = fill(total, task["inboxes"], black_holes)
    healthy_hosts = {origin(u) for u in task["inboxes"]}
    config = {"TIMEOUT": task["timeout"]} if task.get("timeout") else {}
    if task.get("signed"):
        config.update(SIGNING_KEY=bench_key_pem(), SIGNING_KEY_ID=BENCH_KEY_ID)
    config.update(task.get("config", {}))
    if task.get("instrument"):
        from .instrument import install

        store_stats = install()
    result = drain(healthy, receiver_pids=task["receiver_pids"],
                   timeout_s=max(120.0, n / 100),
                   counts=((lambda o: o.job.host in healthy_hosts)
                           if black_holes or paused else None),
                   **config)
    result.update(
        n=total, healthy_rows=healthy, black_hole_rows=total - healthy, hosts=len(healthy_hosts),
        left_in_queue=ScheduledActivity.objects.count(),
        logged_sent=Activity.objects.filter(status="sent").count(),
        paused_hosts=Host.objects.filter(paused_until__gt=timezone.now()).count(),
    )
    if task.get("instrument"):
        result["store"] = store_stats
    result["paused_backlog"] = paused
    result["left_in_queue"] -= paused
    if not black_holes and (result["left_in_queue"] or result["logged_sent"] != n):
        result["error"] = (f"{result['left_in_queue']} rows left, "
                           f"{result['logged_sent']} of {n} logged as sent")
    return result


def signing_limit(task: dict) -> dict:
    """What signing alone allows: RSA-2048 signatures (PKCS#1 v1.5, SHA-256, what a
    delivery's signature costs) per second with one thread per core signing at once;
    ``cryptography`` releases the GIL while it signs, so they run side by side. Also the
    same on one thread, and our whole draft-cavage signer (headers, digests) per core."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from activity_queue.net.signatures import load_private_key
    from activity_queue.net.signing import Signer

    key = load_private_key(bench_key_pem())
    text = ("(request-target): post /inbox/\nhost: 127.0.0.1:8080\n"
            "date: Sun, 06 Dec 2026 12:00:00 GMT\ndigest: SHA-256=" + "A" * 44).encode()
    body = json.dumps(activity(0, "sig")).encode()
    signer = Signer(key, BENCH_KEY_ID)
    seconds = task.get("seconds", 3.0)

    def rate(threads: int, work: Callable[[], object]) -> float:
        counts = [0] * threads
        start = threading.Barrier(threads + 1)
        stop = threading.Event()

        def run(i: int) -> None:
            start.wait()
            while not stop.is_set():
                work()
                counts[i] += 1

        pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        start.wait()
        t0 = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for thread in pool:
            thread.join()
        return sum(counts) / (time.perf_counter() - t0)

    cores = os.cpu_count() or 1
    raw = lambda: key.sign(text, padding.PKCS1v15(), hashes.SHA256())  # noqa: E731
    ours = lambda: signer("POST", "http://127.0.0.1:8080/inbox/", {}, body)  # noqa: E731
    return {"per_second": rate(cores, raw), "threads": cores,
            "one_thread_per_second": rate(1, raw),
            "signer_per_second": rate(cores, ours), "loadavg": os.getloadavg()}


def claim_cost(task: dict) -> dict:
    """What a paused host's backlog costs each claim: the p50 of a 500-row claim (leased,
    then given back) in front of ``paused`` older rows of a paused host, due, then moved
    to the end of the pause by ``hosts.defer_paused``, which is timed too."""
    out = {}
    for paused in task["paused"]:
        reset()
        fill(paused, [PAUSED_INBOX], run="p")
        Host.objects.create(host=origin(PAUSED_INBOX), consecutive_failures=5, trips=1,
                            paused_until=timezone.now() + timedelta(hours=1))
        fill(task.get("n", 20_000), task["inboxes"], run="h")
        row = {}
        for state in ("due", "moved"):
            if state == "moved":
                t0 = time.perf_counter()
                while hosts.defer_paused(limit=10_000) == 10_000:
                    pass
                row["move_us_per_row"] = (time.perf_counter() - t0) * 1e6 / max(1, paused)
            times = []
            for _ in range(task.get("claims", 15)):
                t0 = time.perf_counter()
                jobs = store.claim("bench", 500, 60, per_host=125)
                times.append((time.perf_counter() - t0) * 1000)
                store.release("bench", [j.id for j in jobs])
            row[f"claim_ms_{state}"] = percentiles(times)["p50"]
        out[str(paused)] = row
    return {"claims": out}


def fill_only(task: dict) -> dict:
    reset()
    t0 = time.perf_counter()
    fill(task["n"], task["inboxes"])
    return {"n": task["n"], "seconds": time.perf_counter() - t0}


def memory(task: dict) -> dict:
    """Peak RSS of a fresh worker process draining a large backlog (filled by ``fill_only``)."""
    n = ScheduledActivity.objects.count()
    before = rss_kb()
    result = drain(n, receiver_pids=task["receiver_pids"], timeout_s=max(300.0, n / 100))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.update(n=n, rss_before_kb=before, maxrss_kb=usage.ru_maxrss,
                  left_in_queue=ScheduledActivity.objects.count())
    return result


def enqueue_cost(task: dict) -> dict:
    """Request-path cost: ``with transaction.atomic(): enqueue(activity, to=inbox)``.

    Three loops run interleaved, one call of each in turn, so that they meet the same
    machine: ``enqueue()`` as the transaction's first statement; ``enqueue()`` after the
    caller's own first statement (as in a view that saves its object first; on
    PostgreSQL psycopg's ``BEGIN`` round trip is then paid); and the floor under it, the
    same row written by one plain ``INSERT … VALUES`` through Django's cursor, with no
    checks, no ``has_predecessor`` probes and no wake-up.
    """
    reset()
    inbox = task["inboxes"][0]
    m = task["m"]
    # Warm-up objects come after the measured ones: an activity about an object already
    # queued would take the drop path, and 200 of the measured calls with it.
    for i in range(3 * m, 3 * m + 200):
        with transaction.atomic():
            enqueue(activity(i, "warm"), to=inbox)
    table = ScheduledActivity._meta.db_table
    raw_payload = (f"INSERT INTO {Payload._meta.db_table} (activity_id, activity_type, "
                   "object_id, body, created_at) VALUES (%s, %s, %s, %s, %s) RETURNING id")
    raw_sql = (f"INSERT INTO {table} (payload_id, pair_key, next_attempt_at, inbox, host, "
               "attempts, last_error, leased_by, has_predecessor) "
               "VALUES (%s, %s, %s, %s, %s, 0, '', '', FALSE) RETURNING id")
    host = origin(inbox)
    calls, blocks, after, raw = [], [], [], []
    for i in range(m):
        body = activity(i, "enq")
        t0 = time.perf_counter_ns()
        with transaction.atomic():
            t1 = time.perf_counter_ns()
            enqueue(body, to=inbox)
            t2 = time.perf_counter_ns()
        t3 = time.perf_counter_ns()
        calls.append((t2 - t1) / 1000)
        blocks.append((t3 - t0) / 1000)

        body = activity(m + i, "enq")  # an object of its own
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            t1 = time.perf_counter_ns()
            enqueue(body, to=inbox)
            after.append((time.perf_counter_ns() - t1) / 1000)

        body = activity(2 * m + i, "raw")
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                t1 = time.perf_counter_ns()
                now = connection.ops.adapt_datetimefield_value(timezone.now())
                cursor.execute(raw_payload, [body["id"], body["type"], body["object"]["@id"],
                                             json.dumps(body), now])
                payload_id = cursor.fetchone()[0]
                cursor.execute(raw_sql, [payload_id, pair_key(body["object"]["@id"], inbox), now,
                                         inbox, host])
                cursor.fetchone()
                raw.append((time.perf_counter_ns() - t1) / 1000)
    return {"m": m, "enqueue_us": percentiles(calls), "atomic_block_us": percentiles(blocks),
            "enqueue_in_open_transaction_us": percentiles(after),
            "raw_insert_us": percentiles(raw)}


def latency(task: dict) -> dict:
    """Commit → arrival at the receiver, and commit → ``Activity`` written as sent.

    The in-process worker (the default backend) is woken by the commit; the
    activities are enqueued one per transaction at a steady ``rate``.
    """
    import requests

    from activity_queue.sending.backends import thread as backend

    reset()
    inbox, k, rate = task["inbox"], task["k"], task["rate"]
    resolved: dict[str, float] = {}

    def delivered(sender, outcome: Outcome, **kwargs) -> None:
        resolved[outcome.job.activity_id] = time.perf_counter()

    signals.activity_delivered.connect(delivered, weak=False, dispatch_uid="bench-latency")
    backend.start(name=f"bench-latency-{os.getpid()}")
    committed: dict[str, tuple[float, float]] = {}

    def send(i: int, run: str) -> None:
        body = activity(i, run)
        with transaction.atomic():
            enqueue(body, to=inbox)
        committed[body["id"]] = (time.time(), time.perf_counter())

    for i in range(20):
        send(i, "warm")
        time.sleep(0.01)
    next_at = time.perf_counter() + 0.2
    for i in range(k):
        pause = next_at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        send(i, "lat")
        next_at += 1 / rate
    deadline = time.monotonic() + 60
    while len(resolved) < k + 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    backend.stop()
    signals.activity_delivered.disconnect(dispatch_uid="bench-latency")
    arrivals = dict(map(tuple, requests.get(task["records_url"], timeout=10).json()))
    measured = [i for i in committed if "/lat/" in i]
    to_arrival = [(arrivals[i] - committed[i][0]) * 1000 for i in measured if i in arrivals]
    to_resolved = [(resolved[i] - committed[i][1]) * 1000 for i in measured if i in resolved]
    return {"k": k, "rate": rate, "arrived": len(to_arrival), "resolved": len(to_resolved),
            "commit_to_arrival_ms": percentiles(to_arrival) if to_arrival else None,
            "commit_to_logged_ms": percentiles(to_resolved) if to_resolved else None}


def versions() -> dict:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
        elif connection.vendor == "mysql":
            cursor.execute("SELECT VERSION()")
        else:
            cursor.execute("SELECT sqlite_version()")
        return {"database": f"{connection.vendor} {cursor.fetchone()[0]}",
                "django": django.get_version()}


TASKS = {"throughput": throughput, "signing_limit": signing_limit, "claim_cost": claim_cost,
         "fill": fill_only, "memory": memory, "enqueue": enqueue_cost, "latency": latency,
         "versions": lambda task: versions()}


if __name__ == "__main__":
    task = json.loads(sys.argv[1])
    print(json.dumps(TASKS[task["task"]](task)))
