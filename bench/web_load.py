"""A busy web process on SQLite with the worker beside it: ``python bench/web_load.py``.

Starts the small site of :mod:`bench.web_urls` under gunicorn (one process,
8 threads), three loopback inboxes (:mod:`bench.latency_receiver`), and drives
16 clients for ``--seconds`` (default 60), each alternating a ``POST /post/``
(a row and an ``enqueue()`` to the three inboxes, in one transaction) and a
``GET /recent/``. Three modes: ``none`` (no worker), ``dedicated`` (an
``activity_worker`` process beside gunicorn) and ``inprocess`` (the worker
thread, ``AUTOSTART``). Prints, per mode, requests/s, POST p50/p99, answers
≥ 500, log records with "database is locked" (gunicorn's and the worker's), the
worker's retries after such a wait, client timeouts and the deliveries that
arrived. ``--no-enqueue`` leaves the ``enqueue()`` out of the POST (its cost is the
difference). ``run()`` returns the same as a dict, for scripts that compare
configurations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.receivers import free_ports  # noqa: E402

MODES = ("none", "dedicated", "inprocess")
#: The SQLite ``OPTIONS`` the README recommends (``activity_queue.checks.SQLITE_OPTIONS``).
README_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
#: What it recommended before: no busy timeout (Python's 5 s), commits synced to disk.
EARLIER_README_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL;",
}
#: What a request or a worker step that gave up waiting for the write lock logs (the
#: system check's warning names the error too, without the exception's name).
LOCKED = "OperationalError: database is locked"
#: What the worker logs when it tries a step again after such a wait.
BUSY_RETRY = "the database stayed busy"


class Process:
    """A child in its own session, its output in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)

    def stop(self, timeout: float = 30) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        return self.popen.returncode

    def records_mentioning(self, text: str) -> int:
        """Log records (each starts with ``LOG``, its traceback follows) that mention ``text``."""
        records, current = 0, False
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("LOG "):
                current = False
            if text in line and not current:
                records += 1
                current = True
        return records


def _wait_http(url: str, timeout: float, proc: Process | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310
                answer.read()
                return
        except OSError:
            if time.monotonic() > deadline or (proc and proc.popen.poll() is not None):
                log = proc.log.read_text(errors="replace")[-3000:] if proc else ""
                raise RuntimeError(f"{url} did not answer\n{log}") from None
            time.sleep(0.1)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _drive(base: str, clients: int, seconds: float, timeout: float) -> dict:
    import aiohttp

    stats = {"post": [], "get": [], "status": {}, "timeouts": 0, "errors": 0}
    stop_at = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession, n: int) -> None:
        kinds = ("post", "get") if n % 2 else ("get", "post")
        i = 0
        while time.monotonic() < stop_at:
            kind = kinds[i % 2]
            i += 1
            started = time.monotonic()
            try:
                if kind == "post":
                    request = session.post(f"{base}/post/", data=b"")
                else:
                    request = session.get(f"{base}/recent/")
                async with request as answer:
                    await answer.read()
                    status = answer.status
            except TimeoutError:
                stats["timeouts"] += 1
                continue
            except aiohttp.ClientError:
                stats["errors"] += 1
                await asyncio.sleep(0.05)
                continue
            stats[kind].append(time.monotonic() - started)
            stats["status"][status] = stats["status"].get(status, 0) + 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        started = time.monotonic()
        await asyncio.gather(*(client(session, n) for n in range(clients)))
        stats["elapsed"] = time.monotonic() - started
    return stats


def _arrivals(ports: list[int]) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/records",  # noqa: S310
                                timeout=10) as answer:
        return len(json.loads(answer.read()))


def _queue_counts(db: Path) -> tuple[int, int]:
    """Rows still queued, and deliveries logged as sent."""
    with sqlite3.connect(db, timeout=30) as conn:
        queued = conn.execute("SELECT count(*) FROM activity_queue_scheduledactivity").fetchone()
        sent = conn.execute("SELECT count(*) FROM activity_queue_activity "
                            "WHERE direction = 'out' AND status = 'sent'").fetchone()
    return queued[0], sent[0]


def run(mode: str, seconds: float = 60, *, clients: int = 16, threads: int = 8,
        options: dict | None = None, enqueue: bool = True, client_timeout: float = 10.0,
        drain: float = 30.0, workdir: str | None = None) -> dict:
    """One measurement in a fresh database; see the module's docstring.

    ``options`` are the database's ``OPTIONS`` (default: the README's).
    After the load, the worker gets up to ``drain`` seconds to empty the queue.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    options = README_OPTIONS if options is None else options
    tmp = Path(workdir or tempfile.mkdtemp(prefix="aq-web-load-"))
    db = tmp / "web.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    web_port, *inbox_ports = free_ports(4)
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ,
           "PYTHONPATH": path,
           "PYTHONUNBUFFERED": "1",
           "DJANGO_SETTINGS_MODULE": "bench.web_settings",
           "AQ_WEB_DB": str(db),
           "AQ_WEB_SQLITE_OPTIONS": json.dumps(options),
           "AQ_WEB_AUTOSTART": "1" if mode == "inprocess" else "0",
           "AQ_WEB_ENQUEUE": "1" if enqueue else "0",
           # One receiver process on three ports: three hosts, arrivals counted together.
           "AQ_WEB_INBOXES": ",".join(f"http://127.0.0.1:{p}/inbox/" for p in inbox_ports)}
    subprocess.run([sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
                   cwd=ROOT, env=env, check=True)
    receiver = Process([sys.executable, "-m", "bench.latency_receiver", *map(str, inbox_ports)],
                       env, tmp / "receiver.log")
    web = Process([sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", str(threads),
                   "--worker-class", "gthread", "--bind", f"127.0.0.1:{web_port}",
                   "--timeout", "120", "--graceful-timeout", "20",
                   "django.core.wsgi:get_wsgi_application()"], env, tmp / "web.log")
    worker = None
    try:
        base = f"http://127.0.0.1:{web_port}"
        _wait_http(f"http://127.0.0.1:{inbox_ports[0]}/records", 30, receiver)
        _wait_http(f"{base}/recent/", 60, web)
        if mode == "dedicated":
            worker = Process([sys.executable, "-m", "django", "activity_worker"], env,
                             tmp / "worker.log")
        stats = asyncio.run(_drive(base, clients, seconds, client_timeout))
        arrived_in_load = _arrivals(inbox_ports) if mode != "none" else 0
        queued = _queue_counts(db)[0]
        deadline = time.monotonic() + (drain if mode != "none" else 0)
        while queued and time.monotonic() < deadline:
            time.sleep(0.5)
            queued = _queue_counts(db)[0]
        arrived = _arrivals(inbox_ports) if mode != "none" else 0
    finally:
        if worker is not None:
            worker.stop()
        web.stop()
        receiver.stop()
    queued, sent = _queue_counts(db)
    statuses = stats["status"]
    requests = len(stats["post"]) + len(stats["get"])
    return {
        "mode": mode,
        "seconds": round(stats["elapsed"], 1),
        "clients": clients,
        "threads": threads,
        "options": options,
        "enqueue": enqueue,
        "requests_per_s": round(requests / stats["elapsed"], 1),
        "posts": len(stats["post"]),
        "post_p50_ms": round(1000 * _percentile(stats["post"], 0.50), 1),
        "post_p99_ms": round(1000 * _percentile(stats["post"], 0.99), 1),
        "get_p99_ms": round(1000 * _percentile(stats["get"], 0.99), 1),
        "status": {str(k): v for k, v in sorted(statuses.items())},
        "errors_5xx": sum(v for k, v in statuses.items() if k >= 500),
        "locked_in_logs": sum(p.records_mentioning(LOCKED) for p in (web, worker) if p),
        "worker_busy_retries": sum(p.records_mentioning(BUSY_RETRY) for p in (web, worker) if p),
        "client_timeouts": stats["timeouts"],
        "client_errors": stats["errors"],
        "enqueued": 3 * statuses.get(201, 0) if enqueue else 0,
        "delivered_during_load": arrived_in_load,
        "delivered": arrived,
        "logged_sent": sent,
        "left_queued": queued,
        "logs": str(tmp),
    }


COLUMNS = [("mode", "mode"), ("req/s", "requests_per_s"), ("POST p50 ms", "post_p50_ms"),
           ("POST p99 ms", "post_p99_ms"), ("GET p99 ms", "get_p99_ms"), ("5xx", "errors_5xx"),
           ("locked", "locked_in_logs"), ("busy retries", "worker_busy_retries"),
           ("timeouts", "client_timeouts"),
           ("enqueued", "enqueued"), ("delivered (load)", "delivered_during_load"),
           ("delivered", "delivered"), ("left", "left_queued")]


def table(results: list[dict]) -> str:
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for r in results:
        lines.append("| " + " | ".join(str(r[key]) for _, key in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="load per mode (default 60)")
    p.add_argument("--mode", choices=[*MODES, "all"], default="all")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--threads", type=int, default=8, help="gunicorn threads")
    p.add_argument("--options", help="the database's OPTIONS as JSON (default: the README's)")
    p.add_argument("--earlier-options", action="store_true",
                   help="the OPTIONS the README recommended before: " +
                   json.dumps(EARLIER_README_OPTIONS).replace("%", "%%"))
    p.add_argument("--no-enqueue", action="store_true",
                   help="the POST writes its row only (no worker mode then has work)")
    p.add_argument("--json", action="store_true", help="print each result as JSON too")
    args = p.parse_args(argv)
    options = json.loads(args.options) if args.options else None
    if args.earlier_options:
        options = EARLIER_README_OPTIONS
    results = []
    for mode in MODES if args.mode == "all" else [args.mode]:
        result = run(mode, args.seconds, clients=args.clients, threads=args.threads,
                     options=options, enqueue=not args.no_enqueue)
        results.append(result)
        if args.json:
            print(json.dumps(result), flush=True)
    print(f"SQLite OPTIONS: {json.dumps(results[0]['options'])}")
    print(table(results))


if __name__ == "__main__":
    main()
