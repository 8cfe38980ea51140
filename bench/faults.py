"""Fault scenarios in one command: ``python bench/faults.py [--quick] [--db both]``.

Runs dedicated workers (``activity_worker`` subprocesses) against loopback inboxes that
count the POSTs of each activity, breaks things while they drain, and prints for each
scenario the deliveries lost, the duplicate POSTs, the outcomes lost or written twice and
the recovery time; writes the table as Markdown and JSON to ``bench/results/``.

- ``kills``: the worker is SIGKILLed and started again ``--kills`` times during a drain
  (SQLite and PostgreSQL).
- ``pg``: two workers while a PostgreSQL server of the run's own (initdb + pg_ctl as
  ``postgres``, tests/support/cluster.py) is restarted, crashed (``pg_ctl stop -m
  immediate``) and killed (SIGKILL of the postmaster); once with an outage longer than
  the lease.
- ``black-hole``: healthy inboxes beside one that accepts connections and never answers.
- ``web-load``: ``bench/web_load.py``'s site on SQLite with no worker, a dedicated worker
  and the in-process one.

``--package-root DIR`` runs the workers on the ``activity_queue`` found in ``DIR``
(an older checkout), for a before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.receivers import BlackHole, free_ports  # noqa: E402
from tests.support import cluster as pg  # noqa: E402

SCHED = "activity_queue_scheduledactivity"
LOG = "activity_queue_activity"
HOSTS = "activity_queue_host"
MAX_ATTEMPTS = 12  # conf.DEFAULTS; the runs do not change it


# -- inboxes ----------------------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A killed worker's connections reset: expected here."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class CountingInboxes:
    """HTTP/1.1 inboxes on loopback ports: every POST counted by activity id, timed."""

    def __init__(self, ports: list[int], delay: float = 0.0) -> None:
        self.ports = ports
        self.delay = delay
        self.counts: Counter[str] = Counter()
        self.times: list[float] = []
        self.lock = threading.Lock()
        self.servers: list[ThreadingHTTPServer] = []
        inboxes = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                activity_id = json.loads(body).get("id", "")
                with inboxes.lock:
                    inboxes.counts[activity_id] += 1
                    inboxes.times.append(time.monotonic())
                if inboxes.delay:
                    time.sleep(inboxes.delay)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        for port in ports:
            server = _Server(("127.0.0.1", port), Handler)
            server.daemon_threads = True
            self.servers.append(server)

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}/inbox/" for p in self.ports]

    @property
    def total(self) -> int:
        with self.lock:
            return len(self.times)

    def first_after(self, moment: float) -> float | None:
        with self.lock:
            return next((t for t in self.times if t > moment), None)

    def start(self) -> CountingInboxes:
        for server in self.servers:
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


# -- databases --------------------------------------------------------------------------

class Database:
    """Where a scenario's rows live, seen by this process with plain SQL (no Django)."""

    def __init__(self, kind: str, *, path: Path | None = None, port: int = 5432,
                 name: str = "bench_aq_faults") -> None:
        self.kind, self.path, self.port, self.name = kind, path, port, name

    @property
    def label(self) -> str:
        return "SQLite" if self.kind == "sqlite" else "PostgreSQL"

    def env(self) -> dict[str, str]:
        if self.kind == "sqlite":
            return {"AQ_BENCH_DB": "sqlite", "AQ_BENCH_SQLITE": str(self.path)}
        return {"AQ_BENCH_DB": "postgres", "AQ_BENCH_PG_NAME": self.name,
                "AQ_BENCH_PG_HOST": "127.0.0.1", "AQ_BENCH_PG_PORT": str(self.port),
                "AQ_BENCH_PG_USER": "postgres"}

    def reset(self) -> None:
        if self.kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def query(self, sql: str) -> list[tuple] | None:
        """Rows, or None while the database does not answer."""
        try:
            if self.kind == "sqlite":
                with sqlite3.connect(self.path, timeout=20) as conn:
                    return conn.execute(sql).fetchall()
            import psycopg

            with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                 dbname=self.name, connect_timeout=2) as conn:
                return conn.execute(sql).fetchall()
        except Exception:
            return None

    def count(self, table: str) -> int | None:
        rows = self.query(f"SELECT count(*) FROM {table}")
        return rows[0][0] if rows else None


# -- processes --------------------------------------------------------------------------

class Run:
    """Children of one scenario: the prepare step and the workers, on one database."""

    def __init__(self, db: Database, queue: dict, log_dir: Path,
                 package_root: Path | None = None) -> None:
        self.db = db
        self.queue = queue
        self.log_dir = log_dir
        self.package_root = package_root
        self.workers: list[subprocess.Popen] = []

    def env(self) -> dict[str, str]:
        paths = [str(self.package_root)] if self.package_root else []
        env = {**os.environ, **self.db.env(), "DJANGO_SETTINGS_MODULE": "bench.settings",
               "AQ_BENCH_QUEUE": json.dumps(self.queue), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join([*paths, str(ROOT),
                                              *filter(None, [os.environ.get("PYTHONPATH")])])}
        return env

    def prepare(self, inboxes: list[str], n: int, prefix: str = "") -> None:
        """Migrate, and enqueue ``n`` activities spread over ``inboxes``, one inbox each."""
        task = json.dumps({"inboxes": inboxes, "n": n, "prefix": prefix})
        subprocess.run([sys.executable, "-m", "bench.faults", "--child", task], cwd=ROOT,
                       env=self.env(), check=True, capture_output=True, timeout=600)

    def start_worker(self, name: str) -> subprocess.Popen:
        out = open(self.log_dir / f"{name}.out", "ab")
        err = open(self.log_dir / f"{name}.err", "ab")
        # ``-m`` puts the working directory first on the path: the package's own.
        proc = subprocess.Popen([sys.executable, "-m", "django", "activity_worker",
                                 f"--name={name}"], cwd=self.package_root or ROOT,
                                env=self.env(), stdout=out,
                                stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        err.close()
        self.workers.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill(proc)

    def drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.db.count(SCHED) == 0:
                return True
            time.sleep(0.1)
        return False


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def tally(run: Run, inboxes: CountingInboxes, ids: list[str]) -> dict:
    """What reached the inboxes and what the log holds, against what was enqueued."""
    counts = inboxes.counts
    logged = Counter(dict(run.db.query(
        f"SELECT activity_id, count(*) FROM {LOG} WHERE direction = 'out' "
        "GROUP BY activity_id") or []))
    left = run.db.count(SCHED)
    return {
        "deliveries": len(ids),
        "lost": sum(1 for a in ids if counts[a] == 0),
        "duplicates": sum(counts[a] - 1 for a in ids if counts[a] > 1),
        "activities_posted_twice": sum(1 for a in ids if counts[a] > 1),
        "max_posts_per_activity": max((counts[a] for a in ids), default=0),
        "outcomes_lost": sum(1 for a in ids if logged[a] == 0),
        "outcomes_twice": sum(1 for a in ids if logged[a] > 1),
        "left_in_queue": left,
    }


def activity_ids(n: int, prefix: str = "") -> list[str]:
    return [f"https://bench.example/activities/{prefix}{i}" for i in range(n)]


# -- scenarios ----------------------------------------------------------------------------

def kills(db: Database, args, log_dir: Path) -> dict:
    """SIGKILL the worker ``args.kills`` times during a drain, each time starting a new one."""
    inboxes = CountingInboxes(free_ports(4)).start()
    queue = {"LEASE": 3.0, "POLL_INTERVAL": 0.2, "TIMEOUT": 2.0, "PER_HOST": 8,
             "BATCH_SIZE": 100}
    run = Run(db, queue, log_dir, args.package_root)
    try:
        db.reset()
        ids = activity_ids(args.n)
        run.prepare(inboxes.urls, args.n)
        step = max(1, args.n // (args.kills + 2))
        recoveries = []
        proc = run.start_worker("k0")
        started = time.monotonic()
        killed = 0
        while killed < args.kills:
            target = inboxes.total + step
            if not wait_for(lambda t=target: inboxes.total >= t, 120):
                break
            run.kill(proc)
            killed += 1
            at = time.monotonic()
            proc = run.start_worker(f"k{killed}")
            if wait_for(lambda at=at: inboxes.first_after(at) is not None, 60):
                recoveries.append(inboxes.first_after(at) - at)
        drained = run.drained(300)
        seconds = time.monotonic() - started
        run.stop_all()
        out = tally(run, inboxes, ids)
        out.update({"scenario": f"{killed} SIGKILLs of the worker during a drain",
                    "db": db.label, "kills": killed, "drained": drained,
                    "seconds": round(seconds, 1), "max_attempts": MAX_ATTEMPTS,
                    "recovery_s": summary(recoveries),
                    "recovery_note": "kill to the next POST, a new worker's start included"})
        return out
    finally:
        run.stop_all()
        inboxes.stop()


def pg_outage(args, log_dir: Path, kind: str, down: float, lease: float) -> dict:
    """Two workers on a server of the run's own while it is restarted, crashed or killed."""
    inboxes = CountingInboxes(free_ports(2), delay=0.05).start()
    cluster = pg.Cluster()
    queue = {"LEASE": lease, "POLL_INTERVAL": 0.2, "TIMEOUT": 2.0, "PER_HOST": 4,
             "BATCH_SIZE": 50, "WORKERS": 16}
    db = Database("postgres", port=cluster.port, name=pg.DB_NAME)
    run = Run(db, queue, log_dir, args.package_root)
    try:
        cluster.start()
        db.reset()
        n = args.pg_n
        ids = activity_ids(n)
        run.prepare(inboxes.urls, n)
        for i in range(2):
            run.start_worker(f"{kind}{i}")
        started = time.monotonic()
        wait_for(lambda: inboxes.total >= n // 4, 120)
        at = time.monotonic()
        if kind == "restart":
            back = cluster.restart(down=down)
        else:
            back = cluster.crash(kind, down=down)
        before = db.count(LOG) or 0
        written = wait_for(lambda: (db.count(LOG) or 0) > before, 120, interval=0.05)
        recovery = time.monotonic() - back if written else None
        drained = run.drained(300)
        seconds = time.monotonic() - started
        run.stop_all()
        out = tally(run, inboxes, ids)
        label = {"restart": "restart (pg_ctl stop -m fast)",
                 "immediate": "crash (pg_ctl stop -m immediate)",
                 "kill": "crash (SIGKILL of the postmaster)"}[kind]
        out.update({"scenario": f"PostgreSQL {label}, {down:g} s down, LEASE {lease:g} s, "
                                "2 workers",
                    "db": "PostgreSQL", "drained": drained, "seconds": round(seconds, 1),
                    "outage_s": round(back - at, 1),
                    "recovery_s": None if recovery is None else round(recovery, 2),
                    "recovery_note": "server accepting connections to the next log row"})
        return out
    finally:
        run.stop_all()
        inboxes.stop()
        cluster.remove()


def black_hole(db: Database, args, log_dir: Path) -> dict:
    """Healthy inboxes beside one that never answers: their rate with and without it."""
    ports = free_ports(5)
    inboxes = CountingInboxes(ports[:4]).start()
    hole = BlackHole(ports[4:]).start()
    hole_url = f"http://127.0.0.1:{ports[4]}/inbox/"
    queue = {"LEASE": 60.0, "POLL_INTERVAL": 0.2, "TIMEOUT": 2.0, "PER_HOST": 8,
             "BATCH_SIZE": 200}
    run = Run(db, queue, log_dir, args.package_root)
    rates: dict[str, float] = {}
    n = args.black_hole_n
    lost = duplicates = 0
    hole_host = f"http://127.0.0.1:{ports[4]}"
    seen: dict = {}
    try:
        # Taken in turn, twice, the best of each kept: both meet the same machine.
        for label, holed in (("alone", False), ("beside", True), ("beside", True),
                             ("alone", False)):
            db.reset()
            inboxes.counts.clear()
            inboxes.times.clear()
            if holed:  # a tenth on top, to the black hole, enqueued first (oldest due)
                run.prepare([hole_url], n // 10, prefix="hole-")
            run.prepare(inboxes.urls, n)
            accepted = hole.accepted
            proc = run.start_worker(f"bh-{label}")
            wait_for(lambda: inboxes.total >= 1, 60)
            t0 = inboxes.times[0]
            wait_for(lambda: inboxes.total >= n, 300)
            rate = n / (inboxes.times[min(n, inboxes.total) - 1] - t0)
            rates[label] = max(rates.get(label, 0.0), rate)
            lost += n - len(inboxes.counts)
            duplicates += sum(c - 1 for c in inboxes.counts.values() if c > 1)
            if holed:  # where the black-holed rows are once its first requests timed out
                wait_for(lambda: bool(db.query(f"SELECT 1 FROM {HOSTS} WHERE host = "
                                               f"'{hole_host}'")), 10, interval=0.1)
                rows = db.query(f"SELECT attempts, count(*) FROM {SCHED} WHERE host = "
                                f"'{hole_host}' GROUP BY attempts ORDER BY attempts") or []
                host = db.query(f"SELECT consecutive_failures, trips, paused_until IS NOT "
                                f"NULL, deferred_until IS NOT NULL FROM {HOSTS} "
                                f"WHERE host = '{hole_host}'") or []
                seen = {"black_hole_rows_by_attempts": {str(a): c for a, c in rows},
                        "black_hole_connections": hole.accepted - accepted,
                        "black_hole_host": (dict(zip(["consecutive_failures", "trips",
                                                      "paused", "deferred"],
                                                     map(int, host[0]), strict=True))
                                            if host else None)}
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        return {"scenario": "one black-holed host beside 4 healthy ones", "db": db.label,
                "deliveries": n, "lost": lost, "duplicates": duplicates,
                "healthy_per_second_alone": round(rates["alone"]),
                "healthy_per_second_beside": round(rates["beside"]),
                "ratio": round(rates["beside"] / rates["alone"], 2),
                "black_hole_rows": n // 10, **seen}
    finally:
        run.stop_all()
        hole.stop()
        inboxes.stop()


def web_load(args) -> list[dict]:
    """A site on SQLite under load with no worker, a dedicated one and the in-process one
    (``bench/web_load.py``): what a worker beside it costs the site, and what it delivers."""
    from bench import web_load as module

    rows = []
    alone = None
    for mode in module.MODES:
        scenario = f"web load on SQLite, {WEB_MODES.get(mode, mode)}"
        try:
            r = module.run(mode, args.web_seconds)
        except Exception as exc:  # report, go on with the other scenarios
            rows.append({"scenario": scenario, "db": "SQLite",
                         "error": f"{type(exc).__name__}: {exc}"})
            continue
        alone = alone or (r if mode == "none" else None)
        ratio = (f" ({r['post_p99_ms'] / alone['post_p99_ms']:.2f}× no worker)"
                 if alone and mode != "none" and alone["post_p99_ms"] else "")
        row = {"scenario": scenario, "db": "SQLite",
               "site": (f"{r['requests_per_s']} req/s, POST p50 / p99 {r['post_p50_ms']} / "
                        f"{r['post_p99_ms']} ms{ratio}, 5xx {r['errors_5xx']}, "
                        f"'database is locked' {r['locked_in_logs']}, client timeouts "
                        f"{r['client_timeouts']}")}
        if r["enqueued"] and mode != "none":
            row.update(deliveries=r["enqueued"], lost=max(0, r["enqueued"] - r["delivered"]),
                       duplicates=max(0, r["delivered"] - r["enqueued"]))
        rows.append(row)
    return rows


WEB_MODES = {"none": "no worker", "dedicated": "a dedicated worker beside it",
             "inprocess": "the in-process worker"}


def summary(values: list[float]) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"median": round(ordered[len(ordered) // 2], 2), "max": round(ordered[-1], 2),
            "count": len(ordered)}


# -- the report ---------------------------------------------------------------------------

def recovery_text(row: dict) -> str:
    value = row.get("recovery_s")
    if value is None:
        return "–"
    if isinstance(value, dict):
        return f"{value['median']} s (max {value['max']})"
    return f"{value} s"


def markdown(results: dict) -> str:
    lines = ["| scenario | db | deliveries | lost | duplicate POSTs | outcomes lost / twice "
             "| recovery | notes |", "|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        if "error" in row:
            lines.append(f"| {row['scenario']} | {row['db']} | | | | | | failed: "
                         f"{row['error'][:200]} |")
            continue
        notes = []
        if "max_posts_per_activity" in row:
            notes.append(f"max POSTs of one activity {row['max_posts_per_activity']} "
                         f"(MAX_ATTEMPTS {MAX_ATTEMPTS})")
        if "ratio" in row:
            notes.append(f"healthy hosts {row['healthy_per_second_beside']}/s beside the "
                         f"black hole, {row['healthy_per_second_alone']}/s alone "
                         f"({row['ratio']}×); black-holed rows by attempts "
                         f"{row['black_hole_rows_by_attempts']}, host {row['black_hole_host']}")
        if row.get("drained") is False:
            notes.append(f"NOT drained: {row.get('left_in_queue')} rows left")
        outcomes = (f"{row['outcomes_lost']} / {row['outcomes_twice']}"
                    if "outcomes_lost" in row else "–")
        if "site" in row:
            notes.append(row["site"])
        extra = {k: v for k, v in row.items() if k not in KNOWN}
        if extra:
            notes.append(", ".join(f"{k} {v}" for k, v in extra.items()))
        lines.append(f"| {row['scenario']} | {row['db']} | {row.get('deliveries', '–')} | "
                     f"{row.get('lost', '–')} | {row.get('duplicates', '–')} | {outcomes} | "
                     f"{recovery_text(row)} | {'; '.join(notes)} |")
    return "\n".join(lines)


KNOWN = {"scenario", "db", "site", "deliveries", "lost", "duplicates", "outcomes_lost",
         "outcomes_twice",
         "recovery_s", "recovery_note", "max_posts_per_activity", "max_attempts", "drained",
         "left_in_queue", "seconds", "kills", "activities_posted_twice", "outage_s",
         "healthy_per_second_alone", "healthy_per_second_beside", "ratio", "black_hole_rows",
         "black_hole_connections", "black_hole_rows_by_attempts", "black_hole_host"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller runs, a few kills")
    p.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both",
                   help="databases of the kill and black-hole runs")
    p.add_argument("--n", type=int, help="deliveries per run (default 5000; quick 1000)")
    p.add_argument("--kills", type=int, help="SIGKILLs per drain (default 20; quick 5)")
    p.add_argument("--pg-n", type=int, help="deliveries per PostgreSQL outage run "
                   "(default 2000; quick 800)")
    p.add_argument("--black-hole-n", type=int, help="healthy deliveries per black-hole run "
                   "(default 20000; quick 5000)")
    p.add_argument("--web-seconds", type=float, default=20.0)
    p.add_argument("--skip", default="", help="comma-separated: kills,pg,black-hole,web-load")
    p.add_argument("--package-root", type=Path, help="run the workers on the activity_queue "
                   "package of this directory")
    p.add_argument("--label", default="", help="added to the result files' names")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    args.n = args.n or (1000 if args.quick else 5000)
    args.kills = args.kills if args.kills is not None else (5 if args.quick else 20)
    args.pg_n = args.pg_n or (800 if args.quick else 2000)
    args.black_hole_n = args.black_hole_n or (5000 if args.quick else 20000)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    return args


def git_commit(root: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix="aq-faults-"))
    databases = {"sqlite": Database("sqlite", path=log_dir / "faults.sqlite3"),
                 "postgres": Database("postgres")}
    results = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"),
               "commit": git_commit(ROOT),
               "package_root": str(args.package_root) if args.package_root else None,
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "loadavg_before": os.getloadavg()},
               "params": {"n": args.n, "kills": args.kills, "pg_n": args.pg_n,
                          "black_hole_n": args.black_hole_n,
                          "quick": args.quick},
               "rows": [], "errors": []}

    def attempt(label: str, fn) -> None:
        print(f"faults: {label}…", end="", flush=True, file=sys.stderr)
        t0 = time.monotonic()
        try:
            result = fn()
        except Exception as exc:
            print(" failed", file=sys.stderr)
            results["errors"].append(f"{label}: {type(exc).__name__}: {exc}")
            return
        print(f" {time.monotonic() - t0:.0f} s", file=sys.stderr)
        results["rows"].extend(result if isinstance(result, list) else [result])

    for db in args.dbs:
        if "kills" not in args.skip:
            attempt(f"{db}: {args.kills} kills", lambda db=db: kills(databases[db], args,
                                                                     log_dir))
    if "pg" not in args.skip:
        why = pg.available()
        if why:
            results["errors"].append(f"PostgreSQL outages skipped: {why}")
        else:
            for kind, down, lease in (("restart", 3.0, 5.0), ("immediate", 3.0, 5.0),
                                      ("kill", 3.0, 5.0), ("restart", 8.0, 5.0)):
                attempt(f"PostgreSQL {kind}, {down:g} s down",
                        lambda k=kind, d=down, le=lease: pg_outage(args, log_dir, k, d, le))
    for db in args.dbs:
        if "black-hole" not in args.skip:
            attempt(f"{db}: black hole", lambda db=db: black_hole(databases[db], args,
                                                                  log_dir))
    if "web-load" not in args.skip:
        attempt("web load", lambda: web_load(args))
    results["seconds"] = round(time.monotonic() - started)
    results["machine"]["loadavg_after"] = os.getloadavg()
    text = markdown(results)
    print(text)
    for error in results["errors"]:
        print(f"\nerror: {error}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    name = f"faults-{stamp}{'-' + args.label if args.label else ''}"
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(text + "\n")
    print(f"\nfaults: wrote {out / name}.json and .md in {results['seconds']} s; worker logs "
          f"in {log_dir}", file=sys.stderr)
    return 1 if results["errors"] else 0


def child(task: dict) -> None:
    """In a child with Django on the scenario's database: migrate, then enqueue."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction

    from activity_queue import enqueue

    call_command("migrate", verbosity=0)
    inboxes, n, prefix = task["inboxes"], task["n"], task["prefix"]
    ids = activity_ids(n, prefix)
    for start in range(0, n, 500):
        with transaction.atomic():
            for i in range(start, min(n, start + 500)):
                enqueue({"id": ids[i], "type": "Create",
                         "object": f"https://bench.example/notes/{prefix}{i}"},
                        to=inboxes[i % len(inboxes)])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
    else:
        sys.exit(main())
