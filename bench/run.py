"""The benchmark of SPEC §8 in one command: ``python bench/run.py [--quick] [--db both]``.

Starts nginx (installing Debian's package if needed) on loopback ports and a
black-hole server, measures the raw-client ceilings and our worker on SQLite
and PostgreSQL, each measurement in a child process of its own, prints a
table of ratios and writes JSON + Markdown to ``bench/results/``.
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
from bench.receivers import (  # noqa: E402
    BlackHole,
    FallbackReceiver,
    Nginx,
    ensure_nginx,
    free_ports,
)


class ChildFailed(RuntimeError):
    pass


def child(module: str, task: dict, *, db: str | None = None, timeout: float = 1800) -> dict:
    """Run one measurement in a fresh interpreter and return the JSON it printed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes; under a minute")
    p.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--n", type=int, help="backlog rows per throughput run "
                   "(default 20000; quick 3000)")
    p.add_argument("--hosts", type=int, default=16, help="nginx ports, i.e. receiving hosts")
    p.add_argument("--black-hole-hosts", type=int, default=2)
    p.add_argument("--black-hole-timeout", type=float, default=2.0,
                   help="TIMEOUT of the worker in the black-hole run (seconds)")
    p.add_argument("--enqueue-calls", type=int, help="default 3000; quick 1000")
    p.add_argument("--latency-count", type=int, help="default 1000; quick 200")
    p.add_argument("--latency-rate", type=float, default=200.0, help="activities per second")
    p.add_argument("--memory-n", type=int, help="backlog of the memory run "
                   "(default 100000; quick 0 = skipped)")
    p.add_argument("--ceiling-n", type=int, help="aiohttp POSTs (default 40000; quick 10000); "
                   "the requests loop does a quarter")
    p.add_argument("--skip", default="", help="comma-separated: ceilings,throughput,"
                   "black-hole,enqueue,latency,memory")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    quick = args.quick
    args.n = args.n or (3000 if quick else 20000)
    args.enqueue_calls = args.enqueue_calls or (1000 if quick else 3000)
    args.latency_count = args.latency_count or (200 if quick else 1000)
    if args.memory_n is None:
        args.memory_n = 0 if quick else 100_000
    args.ceiling_n = args.ceiling_n or (10_000 if quick else 40_000)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    return args


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    pg_name = os.environ.get("AQ_BENCH_PG_NAME", "bench_aq")
    sqlite_path = ROOT / "var" / "bench.sqlite3"
    os.environ["AQ_BENCH_SQLITE"] = str(sqlite_path)
    sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{sqlite_path}{suffix}").unlink(missing_ok=True)
    if "postgres" in args.dbs:
        ensure_postgres_database(pg_name)

    ports = free_ports(args.hosts + args.black_hole_hosts + 1)
    nginx_ports = ports[:args.hosts]
    hole_ports = ports[args.hosts:args.hosts + args.black_hole_hosts]
    latency_port = ports[-1]
    binary = ensure_nginx()
    receiver = Nginx(binary, nginx_ports) if binary else FallbackReceiver(nginx_ports)
    if not binary:
        print("bench: nginx could not be installed; using the aiohttp fallback receiver. "
              "Check its CPU share in the results: near 100 % means it set the pace.")
    hole = BlackHole(hole_ports)
    latency_proc = None
    results: dict = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg_before": os.getloadavg()},
        "commit": git_commit(),
        "params": {"n": args.n, "hosts": args.hosts, "black_hole_hosts": args.black_hole_hosts,
                   "black_hole_share": 0.1, "black_hole_timeout": args.black_hole_timeout,
                   "enqueue_calls": args.enqueue_calls, "latency_count": args.latency_count,
                   "latency_rate": args.latency_rate, "memory_n": args.memory_n,
                   "ceiling_n": args.ceiling_n, "payload_bytes": 1024},
        "ceilings": {}, "databases": {}, "errors": [],
    }
    try:
        receiver.start()
        hole.start()
        results["receiver"] = {"kind": receiver.kind, "version": receiver.version(),
                               "ports": len(nginx_ports)}
        pids = receiver.worker_pids
        inboxes = [f"http://127.0.0.1:{p}/inbox/" for p in nginx_ports]
        holes = [f"http://127.0.0.1:{p}/inbox/" for p in hole_ports]

        def attempt(label: str, fn):
            print(f"bench: {label}…", flush=True)
            try:
                return fn()
            except (ChildFailed, subprocess.TimeoutExpired) as exc:
                print(f"bench: {label} failed: {exc}", file=sys.stderr)
                results["errors"].append(f"{label}: {str(exc)[:2000]}")
                return None

        if "ceilings" not in args.skip:
            results["ceilings"]["aiohttp"] = attempt("aiohttp ceiling", lambda: child(
                "bench.ceilings", {"client": "aiohttp", "urls": inboxes, "n": args.ceiling_n,
                                   "inflight": 64, "receiver_pids": pids}))
            results["ceilings"]["requests"] = attempt("requests loop", lambda: child(
                "bench.ceilings", {"client": "requests", "urls": inboxes,
                                   "n": max(1000, args.ceiling_n // 4),
                                   "receiver_pids": pids}))

        if "latency" not in args.skip:
            latency_proc = subprocess.Popen(
                [sys.executable, "-m", "bench.latency_receiver", str(latency_port)],
                cwd=ROOT, stdout=subprocess.PIPE, text=True)
            latency_proc.stdout.readline()

        for db in args.dbs:
            out = results["databases"][db] = {}
            out["versions"] = attempt(f"{db}: versions", lambda db=db: child(
                "bench.tasks", {"task": "versions"}, db=db))
            if "throughput" not in args.skip:
                out["throughput"] = attempt(f"{db}: throughput, {args.n} rows", lambda db=db:
                                            child("bench.tasks", {
                                                "task": "throughput", "n": args.n,
                                                "inboxes": inboxes, "receiver_pids": pids,
                                            }, db=db))
            if "black-hole" not in args.skip:
                before = hole.accepted
                res = attempt(f"{db}: black-hole run", lambda db=db: child("bench.tasks", {
                    "task": "throughput", "n": args.n, "inboxes": inboxes, "black_holes": holes,
                    "timeout": args.black_hole_timeout, "receiver_pids": pids}, db=db))
                if res:
                    res["black_hole_connections"] = hole.accepted - before
                out["black_hole"] = res
            if "enqueue" not in args.skip:
                out["enqueue"] = attempt(f"{db}: enqueue cost", lambda db=db: child(
                    "bench.tasks", {"task": "enqueue", "m": args.enqueue_calls,
                                    "inboxes": inboxes}, db=db))
            if latency_proc is not None:
                out["latency"] = attempt(f"{db}: latency", lambda db=db: child(
                    "bench.tasks", {
                        "task": "latency", "k": args.latency_count, "rate": args.latency_rate,
                        "inbox": f"http://127.0.0.1:{latency_port}/inbox/",
                        "records_url": f"http://127.0.0.1:{latency_port}/records"}, db=db))
            if args.memory_n and "memory" not in args.skip:
                filled = attempt(f"{db}: filling {args.memory_n} rows", lambda db=db: child(
                    "bench.tasks", {"task": "fill", "n": args.memory_n, "inboxes": inboxes},
                    db=db))
                if filled:
                    out["memory"] = attempt(f"{db}: memory run", lambda db=db: child(
                        "bench.tasks", {"task": "memory", "receiver_pids": pids}, db=db))
    finally:
        if latency_proc is not None:
            latency_proc.terminate()
            latency_proc.wait(10)
        hole.stop()
        receiver.stop()
    results["machine"]["loadavg_after"] = os.getloadavg()
    results["seconds"] = time.monotonic() - started
    report.add_ratios(results)
    text = report.markdown(results)
    print()
    print(text)
    paths = report.write(results, text, Path(args.out))
    print(f"bench: wrote {', '.join(str(p.relative_to(ROOT)) for p in paths)} "
          f"in {results['seconds']:.0f} s")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
