"""The benchmark of SPEC §8 in one command: ``python bench/run.py [--quick] [--db both]``.

Starts nginx (installing Debian's package if needed) on loopback ports and a
black-hole server, measures the raw-client ceilings and our worker on SQLite
and PostgreSQL (``--db all``: MariaDB/MySQL too), each measurement in a child
process of its own, prints a table of ratios and writes JSON + Markdown to
``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.broker import RedisServer, ensure_redis_server  # noqa: E402
from bench.receivers import (  # noqa: E402
    BlackHole,
    FallbackReceiver,
    Nginx,
    ensure_nginx,
    free_ports,
)


class ChildFailed(RuntimeError):
    pass


def child(module: str, task: dict, *, db: str | None = None, timeout: float = 1800,
          env: dict | None = None) -> dict:
    """Run one measurement in a fresh interpreter and return the JSON it printed."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if db:
        env["AQ_BENCH_DB"] = db
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.run([sys.executable, "-m", module, json.dumps(task)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ChildFailed(f"{module} {task.get('task', task.get('client'))} on {db}: "
                          f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def ensure_postgres_database(name: str) -> None:
    import psycopg

    params = {"host": os.environ.get("AQ_BENCH_PG_HOST", "127.0.0.1"),
              "port": os.environ.get("AQ_BENCH_PG_PORT", "5432"),
              "user": os.environ.get("AQ_BENCH_PG_USER", "postgres"),
              "password": os.environ.get("AQ_BENCH_PG_PASSWORD", "")}
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def ensure_mysql_database(name: str) -> None:
    import MySQLdb

    conn = MySQLdb.connect(host=os.environ.get("AQ_BENCH_MYSQL_HOST", "127.0.0.1"),
                           port=int(os.environ.get("AQ_BENCH_MYSQL_PORT", "3306")),
                           user=os.environ.get("AQ_BENCH_MYSQL_USER", "root"),
                           password=os.environ.get("AQ_BENCH_MYSQL_PASSWORD", ""))
    try:
        conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{name}` "
                              "CHARACTER SET utf8mb4")
    finally:
        conn.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes; under a minute")
    p.add_argument("--db", choices=["sqlite", "postgres", "mysql", "both", "all"],
                   default="both", help="both: SQLite and PostgreSQL; all: MariaDB/MySQL too")
    p.add_argument("--n", type=int, help="backlog rows per throughput run "
                   "(default 20000; quick 5000)")
    p.add_argument("--hosts", type=int, default=16, help="nginx ports, i.e. receiving hosts")
    p.add_argument("--black-hole-hosts", type=int, default=2)
    p.add_argument("--black-hole-timeout", type=float, default=2.0,
                   help="TIMEOUT of the worker in the black-hole run (seconds)")
    p.add_argument("--enqueue-calls", type=int, help="default 3000; quick 1000")
    p.add_argument("--latency-count", type=int, help="default 1000; quick 200")
    p.add_argument("--latency-rate", type=float, default=200.0, help="activities per second")
    p.add_argument("--paused-n", type=int, help="rows of a paused host in the paused-backlog "
                   "run (default 100000; quick 0 = skipped)")
    p.add_argument("--memory-n", type=int, help="backlog of the memory run "
                   "(default 100000; quick 0 = skipped)")
    p.add_argument("--ceiling-n", type=int, help="aiohttp POSTs (default 40000; quick 8000); "
                   "the requests loop an eighth")
    p.add_argument("--celery-n", type=int, help="tasks of the Celery peer "
                   "(default 5000; quick 1000)")
    p.add_argument("--skip", default="", help="comma-separated: ceilings,celery,throughput,"
                   "black-hole,signed,paused,claims,enqueue,latency,memory")
    p.add_argument("--repeat", type=int, help="runs of each rate measurement, the best kept "
                   "(default 3; quick 1)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    quick = args.quick
    args.n = args.n or (5000 if quick else 20000)
    args.enqueue_calls = args.enqueue_calls or (1000 if quick else 3000)
    args.latency_count = args.latency_count or (200 if quick else 1000)
    if args.paused_n is None:
        args.paused_n = 0 if quick else 100_000
    if args.memory_n is None:
        args.memory_n = 0 if quick else 100_000
    args.ceiling_n = args.ceiling_n or (8_000 if quick else 40_000)
    args.celery_n = args.celery_n or (1000 if quick else 5000)
    args.repeat = max(1, args.repeat or (1 if quick else 3))
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.dbs = {"both": ["sqlite", "postgres"], "all": ["sqlite", "postgres", "mysql"]}.get(
        args.db, [args.db])
    return args


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() or "unknown"


class Bench:
    """One sitting: the receivers, the measurements in order, and what they gave."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        ports = free_ports(args.hosts + args.black_hole_hosts + 1)
        self.nginx_ports = ports[:args.hosts]
        self.hole = BlackHole(ports[args.hosts:args.hosts + args.black_hole_hosts])
        self.latency_port = ports[-1]
        binary = ensure_nginx()
        if not binary:
            print("bench: nginx could not be installed; using the aiohttp fallback receiver. "
                  "Check its CPU share in the results: near 100 % means it set the pace.")
        self.receiver = (Nginx(binary, self.nginx_ports) if binary
                         else FallbackReceiver(self.nginx_ports))
        self.latency_proc: subprocess.Popen | None = None
        self.inboxes = [f"http://127.0.0.1:{p}/inbox/" for p in self.nginx_ports]
        self.holes = [f"http://127.0.0.1:{p}/inbox/" for p in self.hole.ports]
        self.results: dict = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": args.quick,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "loadavg_before": os.getloadavg()},
            "commit": git_commit(),
            "params": {"n": args.n, "hosts": args.hosts,
                       "black_hole_hosts": args.black_hole_hosts, "black_hole_share": 0.1,
                       # Since 2026-11-24: n healthy rows in both runs, the black-holed on top.
                       "black_hole_rows_on_top": True,
                       "black_hole_timeout": args.black_hole_timeout,
                       "enqueue_calls": args.enqueue_calls,
                       "latency_count": args.latency_count, "latency_rate": args.latency_rate,
                       "memory_n": args.memory_n, "paused_n": args.paused_n,
                       "ceiling_n": args.ceiling_n,
                       "celery_n": args.celery_n,
                       "repeat": args.repeat, "payload_bytes": 1024},
            "ceilings": {}, "peers": {}, "databases": {}, "errors": [],
        }

    # -- receivers -----------------------------------------------------------

    def start(self) -> None:
        self.receiver.start()
        self.hole.start()
        self.results["receiver"] = {"kind": self.receiver.kind,
                                    "version": self.receiver.version(),
                                    "ports": len(self.nginx_ports)}
        if "latency" not in self.args.skip:
            self.latency_proc = subprocess.Popen(
                [sys.executable, "-m", "bench.latency_receiver", str(self.latency_port)],
                cwd=ROOT, stdout=subprocess.PIPE, text=True)
            self.latency_proc.stdout.readline()

    def stop(self) -> None:
        if self.latency_proc is not None:
            self.latency_proc.terminate()
            self.latency_proc.wait(10)
        self.hole.stop()
        self.receiver.stop()

    # -- measurements ------------------------------------------------------------

    def attempt(self, label: str, fn, repeat: int = 1) -> dict | None:
        """Run ``fn`` ``repeat`` times and keep the fastest run (best of N on a shared
        machine; every run's rate is kept under ``runs``). A failure is recorded, and
        the sitting goes on."""
        runs = []
        for i in range(repeat):
            print(f"bench: {label}{f' ({i + 1}/{repeat})' if repeat > 1 else ''}…",
                  end="", flush=True)
            t0 = time.monotonic()
            try:
                runs.append(fn())
                print(f" {time.monotonic() - t0:.1f} s", flush=True)
            except (ChildFailed, subprocess.TimeoutExpired) as exc:
                print(" failed", flush=True)
                print(f"bench: {label} failed: {exc}", file=sys.stderr)
                self.results["errors"].append(f"{label}: {str(exc)[:2000]}")
                return None
        if repeat == 1:
            return runs[0]
        best = max(runs, key=lambda r: r.get("per_second", 0))
        return {**best, "runs": [r.get("per_second") for r in runs]}

    def interleaved(self, jobs: dict[str, tuple[str, object]], repeat: int) -> dict:
        """Rate measurements taken in turn, one run of each per round (every other round
        in reverse order), each kept as the best of ``repeat`` (see :meth:`attempt`). The
        black-hole ratio compares two of them: taken in turn, both meet the same machine,
        where three runs of one and then three of the other met whatever changed in
        between."""
        runs: dict[str, list[dict]] = {key: [] for key in jobs}
        for i in range(repeat):
            # Every other round in reverse order, so that neither run always follows the other.
            for key, (label, fn) in list(jobs.items())[::-1 if i % 2 else 1]:
                if runs[key] is None:
                    continue
                result = self.attempt(f"{label}{f' ({i + 1}/{repeat})' if repeat > 1 else ''}",
                                      fn)
                if result is None:
                    runs[key] = None
                else:
                    runs[key].append(result)
        out = {}
        for key, done in runs.items():
            if done:
                best = max(done, key=lambda r: r.get("per_second", 0))
                out[key] = {**best, "runs": [r.get("per_second") for r in done]}
        return out

    def ceilings(self) -> None:
        args, pids = self.args, self.receiver.worker_pids
        self.results["ceilings"]["aiohttp"] = self.attempt("aiohttp ceiling", lambda: child(
            "bench.ceilings", {"client": "aiohttp", "urls": self.inboxes, "n": args.ceiling_n,
                               "inflight": 64, "receiver_pids": pids}), args.repeat)
        self.results["ceilings"]["requests"] = self.attempt("requests loop", lambda: child(
            "bench.ceilings", {"client": "requests", "urls": self.inboxes,
                               "n": max(1000, args.ceiling_n // 8), "receiver_pids": pids}),
            args.repeat)

    def celery(self) -> None:
        """The peer: Celery on Redis, one plain ``requests.post`` task per delivery."""
        import importlib.util

        if importlib.util.find_spec("celery") is None:
            print("bench: Celery peer skipped: pip install 'celery[redis]' (or -e '.[bench]')")
            return
        args, pids = self.args, self.receiver.worker_pids
        url, server = os.environ.get("AQ_BENCH_REDIS"), None
        if not url:
            binary = ensure_redis_server()
            if not binary:
                print("bench: Celery peer skipped: redis-server is missing (install it, or "
                      "set AQ_BENCH_REDIS)")
                return
            server = RedisServer(binary, free_ports(1)[0]).start()
            url = server.url
            self.results["broker"] = {"kind": "redis", "version": server.version()}
        try:
            for key, pool, concurrency in (("celery_threads", "threads", 16),
                                           ("celery_prefork", "prefork", 2)):
                task = {"n": args.celery_n, "urls": self.inboxes, "receiver_pids": pids,
                        "pool": pool, "concurrency": concurrency,
                        "broker_pid": server.proc.pid if server else None}
                self.results["peers"][key] = self.attempt(
                    f"Celery on Redis, {pool} pool ×{concurrency}, {args.celery_n} tasks",
                    lambda task=task: child("bench.celery_peer", task, env={
                        "AQ_BENCH_REDIS": url, "AQ_BENCH_CELERY_RUN": f"aq-bench-{os.getpid()}"}),
                    args.repeat)
        finally:
            if server is not None:
                server.stop()

    def database(self, db: str) -> None:
        args, skip, pids = self.args, self.args.skip, self.receiver.worker_pids
        out = self.results["databases"][db] = {}

        def task(name: str, **params) -> dict:
            return child("bench.tasks", {"task": name, "receiver_pids": pids, **params}, db=db)

        def holed() -> dict:
            before = self.hole.accepted
            res = task("throughput", n=args.n, inboxes=self.inboxes, black_holes=self.holes,
                       timeout=args.black_hole_timeout)
            return {**res, "black_hole_connections": self.hole.accepted - before}

        out["versions"] = self.attempt(f"{db}: versions", lambda: task("versions"))
        rates = {}
        if "throughput" not in skip:
            rates["throughput"] = (f"{db}: throughput, {args.n} rows",
                                   lambda: task("throughput", n=args.n, inboxes=self.inboxes))
        if "black-hole" not in skip:
            rates["black_hole"] = (f"{db}: black-hole run", holed)
        if "signed" not in skip:
            rates["signed"] = (f"{db}: signed throughput, {args.n} rows",
                               lambda: task("throughput", n=args.n, inboxes=self.inboxes,
                                            signed=True))
            rates["signing_limit"] = (f"{db}: signing limit, {os.cpu_count()} threads",
                                      lambda: task("signing_limit"))
            cores = os.cpu_count() or 1
            for key, processes, threads in (("signed_ceiling", 1, 2 * cores),
                                            ("signed_ceiling_processes", cores, 0)):
                rates[key] = (
                    f"{db}: signed aiohttp ceiling, {processes} process(es)",
                    lambda processes=processes, threads=threads: child("bench.ceilings", {
                        "client": "aiohttp-signed", "urls": self.inboxes, "n": args.n // 2,
                        "inflight": 64, "processes": processes, "threads": threads,
                        "receiver_pids": pids}))
        out.update(self.interleaved(rates, args.repeat))
        if args.paused_n and "claims" not in skip:
            out["claims"] = self.attempt(f"{db}: claim cost behind a paused backlog", lambda: task(
                "claim_cost", paused=sorted({0, args.paused_n // 5, args.paused_n}),
                inboxes=self.inboxes))
        if args.paused_n and "paused" not in skip:
            for key, moved in (("paused", False), ("paused_moved", True)):
                out[key] = self.attempt(
                    f"{db}: {args.n} rows behind a paused backlog{', moved' if moved else ''}",
                    lambda moved=moved: task("throughput", n=args.n, inboxes=self.inboxes,
                                             paused_backlog=args.paused_n, paused_moved=moved))
        if "enqueue" not in skip:
            out["enqueue"] = self.attempt(f"{db}: enqueue cost", lambda: task(
                "enqueue", m=args.enqueue_calls, inboxes=self.inboxes))
        if self.latency_proc is not None:
            out["latency"] = self.attempt(f"{db}: latency", lambda: task(
                "latency", k=args.latency_count, rate=args.latency_rate,
                inbox=f"http://127.0.0.1:{self.latency_port}/inbox/",
                records_url=f"http://127.0.0.1:{self.latency_port}/records"))
        if args.memory_n and "memory" not in skip:
            if self.attempt(f"{db}: filling {args.memory_n} rows", lambda: task(
                    "fill", n=args.memory_n, inboxes=self.inboxes)):
                out["memory"] = self.attempt(f"{db}: memory run", lambda: task("memory"))

    def run(self) -> dict:
        started = time.monotonic()
        try:
            self.start()
            if "ceilings" not in self.args.skip:
                self.ceilings()
            if "celery" not in self.args.skip:
                self.celery()
            for db in self.args.dbs:
                self.database(db)
        finally:
            self.stop()
        self.results["machine"]["loadavg_after"] = os.getloadavg()
        self.results["seconds"] = time.monotonic() - started
        report.add_ratios(self.results)
        return self.results


def prepare_databases(args: argparse.Namespace) -> None:
    """A fresh SQLite file under var/; the PostgreSQL database created when missing."""
    sqlite_path = Path(os.environ.setdefault("AQ_BENCH_SQLITE",
                                             str(ROOT / "var" / "bench.sqlite3")))
    sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{sqlite_path}{suffix}").unlink(missing_ok=True)
    if "postgres" in args.dbs:
        ensure_postgres_database(os.environ.get("AQ_BENCH_PG_NAME", "bench_aq"))
    if "mysql" in args.dbs:
        ensure_mysql_database(os.environ.get("AQ_BENCH_MYSQL_NAME", "bench_aq"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_databases(args)
    results = Bench(args).run()
    text = report.markdown(results)
    print()
    print(text)
    paths = report.write(results, text, Path(args.out))
    print(f"bench: wrote {', '.join(str(p) for p in paths)} in {results['seconds']:.0f} s")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
