"""Where a delivery's time goes: ``python bench/profile.py [--db sqlite] [--n 20000]``.

Runs one throughput measurement (as ``bench/run.py`` does) with timers around
the worker's database calls, under py-spy (``pip install py-spy``; sampling
every thread, idle ones included) when it is installed. Prints, per
delivery, the time of each side: the worker thread (claim, resolve, release,
signals, its own Python) and the HTTP thread (our HTTP/1.1 client, the event
loop, our admission and hand-off code), and writes the same to
``bench/results/``. ``--black-holes 2`` profiles the black-hole run instead:
every tenth row goes to a host that accepts connections and never answers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.receivers import BlackHole, Nginx, ensure_nginx, free_ports  # noqa: E402

WORKER, HTTP = "bench-worker", "activity-queue-http"
STORE_CALLS = ("claim", "resolve", "release", "renew", "tripped_hosts", "defer_backlog",
               "defer_paused")
DRIVER_LEAVES = ("sqlite3/base.py", "django/db/utils.py", "psycopg/", "_commit (",
                 "BaseDatabaseWrapper.commit")


def _name(frame: str) -> str:
    return frame.split(" (", 1)[0]


def classify(thread: str, frames: list[str]) -> str | None:
    """One label per sample: which part of the delivery pipeline it was in."""
    text = ";".join(frames)
    leaf = frames[-1] if frames else ""
    if thread == WORKER:
        if "on_claim (activity_queue/dropping.py" in text:
            part = "database call" if any(s in leaf for s in DRIVER_LEAVES) else "Python"
            return f"worker: dropping.on_claim, redundancy and order ({part})"
        if "poll (activity_queue/dispatch.py" in text:
            return "worker: dispatch.poll (inbox discovery)"
        for call in STORE_CALLS:
            if f";{call} (activity_queue/store.py" in f";{text}":
                part = "database call" if any(s in leaf for s in DRIVER_LEAVES) else "Python"
                return f"worker: store.{call} ({part})"
        if "Signal.send" in text:
            return "worker: signals (activity_delivered…)"
        if _name(leaf) in ("Event.wait", "Condition.wait"):
            return "worker: idle (waiting for outcomes or work)"
        if "Worker._finalise" in text or "Worker._resolve" in text:
            return "worker: _resolve bookkeeping (Python)"
        return "worker: loop (Python)"
    if thread == HTTP:
        if _name(leaf) == "EpollSelector.select":
            return "http: idle (epoll wait)"
        if "Transport._post" in text:
            index = max(i for i, f in enumerate(frames) if _name(f) == "Transport._post")
            below = frames[index + 1:]
            if below and "activity_queue/http11.py" in below[0]:
                return "http: HTTP/1.1 client request/response (inside _post)"
            return "http: our code (_post/_deliver)"
        if any(_name(f) in ("Transport._finished", "Transport._emit", "Transport._pump",
                            "Transport._accept", "Transport._hand_back",
                            "Worker._on_outcome") for f in frames):
            return "http: our code (admission, outcome hand-off)"
        if "activity_queue/http11.py" in text:
            return "http: HTTP/1.1 client (protocol callbacks)"
        return "http: event loop"
    return None


def summarise(raw: Path, rate: int, delivered: int) -> dict[str, dict]:
    """py-spy's raw output → microseconds per delivery for each label, per thread."""
    counts: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        head, *frames = stack.split(";")
        thread = head.split(": ", 1)[1] if ": " in head else head
        label = classify(thread, frames)
        if label:
            counts[label] += int(n)
            totals[thread] += int(n)
    us = 1e6 / rate / max(1, delivered)
    return {
        "per_delivery_us": {k: v * us for k, v in counts.most_common()},
        "thread_total_us": {k: v * us for k, v in totals.items()},
    }


def markdown(db: str, result: dict, sampled: dict | None) -> str:
    n = result["delivered"]
    lines = [
        f"## Profile of the worker on {db}, {result['started_at']}",
        "",
        f"{n:,} deliveries over {result['hosts']} nginx hosts in {result['seconds']:.1f} s "
        f"= {result['per_second']:,.0f}/s; process CPU {result['cpu_ms_per_delivery'] * 1000:.0f}"
        f" µs per delivery (CPU share {result['cpu_share']:.2f} cores); load average "
        f"{result['loadavg']:.2f} on {os.cpu_count()} CPUs."
        + (f" Counted: healthy rows only; {result['black_hole_rows']:,} more rows went to "
           "black-holed hosts." if result.get("black_hole_rows") else ""),
        "",
        "### CPU per thread (from /proc), µs per delivery",
        "",
        "| thread | µs |", "|---|---:|",
    ]
    for name, ms in result["thread_cpu_ms_per_delivery"].items():
        lines.append(f"| {name} | {ms * 1000:.0f} |")
    if result.get("db_server_cpu_ms_per_delivery") is not None:
        lines.append(f"| PostgreSQL backends | {result['db_server_cpu_ms_per_delivery'] * 1000:.0f}"
                     " |")
    lines += ["", "### Database calls of the worker thread (timers)", "",
              "| call | calls | rows | wall µs per delivery | thread CPU µs per delivery "
              "| wall ms per call |", "|---|---:|---:|---:|---:|---:|"]
    for name, s in result["store"].items():
        if s["calls"]:
            lines.append(f"| {name} | {s['calls']:,} | {s['rows']:,} "
                         f"| {s['wall_s'] * 1e6 / n:.0f} | {s['cpu_s'] * 1e6 / n:.0f} "
                         f"| {s['wall_s'] * 1e3 / s['calls']:.1f} |")
    if sampled:
        lines += ["", "### Sampled wall time per thread (py-spy, idle included), µs per delivery",
                  "", "| where | µs |", "|---|---:|"]
        for label, us in sampled["per_delivery_us"].items():
            lines.append(f"| {label} | {us:.0f} |")
        lines += ["", "A thread waiting for the GIL is sampled where it waits, so on a busy "
                  "machine the shares above include GIL and CPU contention."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--hosts", type=int, default=16)
    p.add_argument("--black-holes", type=int, default=0,
                   help="hosts that never answer, taking every tenth row (bench/run.py: 2)")
    p.add_argument("--timeout", type=float, default=2.0,
                   help="TIMEOUT of the worker when there are black holes")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--no-py-spy", action="store_true")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)

    binary = ensure_nginx()
    if not binary:
        print("profile: nginx is needed (apt-get install nginx-light)", file=sys.stderr)
        return 1
    ports = free_ports(args.hosts + args.black_holes)
    ports, hole_ports = ports[:args.hosts], ports[args.hosts:]
    nginx = Nginx(binary, ports).start()
    hole = BlackHole(hole_ports).start()
    work = Path(tempfile.mkdtemp(prefix="aq-profile-"))
    raw = work / "py-spy.txt"
    spy = None if args.no_py_spy else (shutil.which("py-spy")
                                       or shutil.which("py-spy", path=str(Path(sys.executable)
                                                                          .parent)))
    task = {"task": "throughput", "n": args.n, "instrument": True,
            "inboxes": [f"http://127.0.0.1:{port}/inbox/" for port in ports],
            "receiver_pids": nginx.worker_pids}
    if hole_ports:
        task.update(black_holes=[f"http://127.0.0.1:{port}/inbox/" for port in hole_ports],
                    timeout=args.timeout)
    env = {**os.environ, "AQ_BENCH_DB": args.db, "AQ_BENCH_SQLITE": str(work / "db.sqlite3"),
           "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "bench.tasks", json.dumps(task)]
    if spy:
        command = [spy, "record", "--format", "raw", "--threads", "--idle", "--rate",
                   str(args.rate), "--output", str(raw), "--", *command]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              check=False)
    finally:
        hole.stop()
        nginx.stop()
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(proc.stderr[-3000:], file=sys.stderr)
        return 1
    result = json.loads(lines[-1])
    result.update(started_at=started, loadavg=os.getloadavg()[0])
    sampled = summarise(raw, args.rate, result["delivered"]) if spy and raw.exists() else None
    kind = f"{args.db}-black-hole" if hole_ports else args.db
    text = markdown(kind, result, sampled)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"profile-{kind}-{started.replace(':', '').replace('-', '').replace('+0000', '')}"
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps({"result": result, "sampled": sampled},
                                                 indent=2) + "\n")
    if spy and raw.exists():
        print(f"profile: raw py-spy stacks (flamegraph input) kept in {raw}")
    print(f"profile: wrote bench/results/{stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
