"""Ratios, the Markdown table, and the files in ``bench/results/``."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

DB_LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL", "mysql": "MariaDB/MySQL"}
PEERS = {"celery_threads": "Celery on Redis, plain task (`requests.post`), threads pool ×16",
         "celery_prefork": "Celery on Redis, plain task (`requests.post`), prefork pool ×2"}
TARGETS = {"vs_aiohttp": 0.5, "black_hole_vs_healthy": 0.9, "enqueue_p50_us": 500.0,
           "signed_vs_signing_limit": 0.7}


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def add_ratios(results: dict) -> None:
    aio = _get(results, "ceilings", "aiohttp", "per_second")
    req = _get(results, "ceilings", "requests", "per_second")
    peers = {key: _get(results, "peers", key, "per_second") for key in PEERS}
    for key, rate in peers.items():
        if rate and aio:
            results["peers"][key]["vs_aiohttp"] = rate / aio
    for db in results["databases"].values():
        ours = _get(db, "throughput", "per_second")
        holed = _get(db, "black_hole", "per_second")
        p50 = _get(db, "enqueue", "enqueue_us", "p50")
        opened = _get(db, "enqueue", "enqueue_in_open_transaction_us", "p50")
        raw = _get(db, "enqueue", "raw_insert_us", "p50")
        ratios = db["ratios"] = {
            "vs_aiohttp": ours / aio if ours and aio else None,
            "vs_requests": ours / req if ours and req else None,
            "black_hole_vs_healthy": holed / ours if ours and holed else None,
            "black_hole_vs_healthy_paired_median": _paired_median(
                _get(db, "black_hole", "runs"), _get(db, "throughput", "runs")),
            "signed_vs_signing_limit": (_get(db, "signed", "per_second")
                                        / _get(db, "signing_limit", "per_second")
                                        if _get(db, "signed", "per_second")
                                        and _get(db, "signing_limit", "per_second") else None),
            "signed_vs_signing_limit_paired_median": _paired_median(
                _get(db, "signed", "runs"), _get(db, "signing_limit", "runs")),
            "signed_vs_unsigned": (_get(db, "signed", "per_second") / ours
                                   if ours and _get(db, "signed", "per_second") else None),
            **{f"{key}_vs_signing_limit": _over(db, key, "signing_limit")
               for key in ("signed_ceiling", "signed_ceiling_processes")},
            "signed_vs_signed_ceiling": _over(db, "signed", "signed_ceiling"),
            "enqueue_vs_raw_insert": opened / raw if opened and raw else None,
            **{f"{key}_vs_healthy": (_get(db, key, "per_second") / ours
                                     if ours and _get(db, key, "per_second") else None)
               for key in ("paused", "paused_moved")},
            "memory_run_vs_aiohttp": (_get(db, "memory", "per_second") / aio
                                      if aio and _get(db, "memory", "per_second") else None),
            **{f"vs_{key}": ours / rate if ours and rate else None
               for key, rate in peers.items()},
        }
        db["targets"] = {
            "vs_aiohttp >= 0.5": _meets(ratios["vs_aiohttp"], TARGETS["vs_aiohttp"]),
            "black_hole_vs_healthy >= 0.9": _meets(ratios["black_hole_vs_healthy"],
                                                   TARGETS["black_hole_vs_healthy"]),
            "enqueue p50 < 500 us": (None if p50 is None
                                     else p50 < TARGETS["enqueue_p50_us"]),
            "signed_vs_signing_limit >= 0.7": _meets(ratios["signed_vs_signing_limit"],
                                                     TARGETS["signed_vs_signing_limit"]),
        }


def _over(db: dict, key: str, base: str) -> float | None:
    """One rate of ``db`` over another, when both were measured."""
    rate, under = _get(db, key, "per_second"), _get(db, base, "per_second")
    return rate / under if rate and under else None


def _paired_median(holed: list | None, healthy: list | None) -> float | None:
    """The median over rounds of one run / another, taken in turn."""
    pairs = [h / o for h, o in zip(holed or [], healthy or [], strict=False) if h and o]
    return statistics.median(pairs) if pairs else None


def _claims(db: dict, size: int) -> str:
    row = _get(db, "claims", "claims", str(size))
    if not row:
        return "–"
    moving = f" (moving: {row['move_us_per_row']:.0f} µs/row)" if size else ""
    return f"{row['claim_ms_due']:.1f} / {row['claim_ms_moved']:.1f}{moving}"


def _meets(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f} %"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _pair(stats: dict | None, digits: int = 0) -> str:
    if not stats:
        return "–"
    return f"{_n(stats['p50'], digits)} / {_n(stats['p99'], digits)}"


def _mark(ok: bool | None) -> str:
    return {True: " ✓", False: " ✗", None: ""}[ok]


def markdown(results: dict) -> str:
    p = results["params"]
    m = results["machine"]
    rcv = results.get("receiver", {})
    lines = [
        f"## activity_queue benchmark, {results['started_at']}"
        f"{' (--quick)' if results['quick'] else ''}, commit {results['commit']}",
        "",
        f"{m['cpus']} CPUs, Python {m['python']}; load average before "
        f"{m['loadavg_before'][0]:.2f}, after {m['loadavg_after'][0]:.2f} "
        "(other work on the machine makes every figure indicative). "
        f"Receiver: {rcv.get('kind', '?')} {rcv.get('version', '')} on "
        f"{rcv.get('ports', '?')} loopback ports; activities of {p['payload_bytes']} bytes."
        + (f" Celery's broker: {results['broker']['kind']} {results['broker']['version']}."
           if results.get("broker") else ""),
        "",
        "### Ceilings: raw clients, no queue, no database; and the peers",
        "",
        "| client | POSTs/s | CPU ms per POST | receiver CPU |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("aiohttp", "aiohttp, 64 in flight, one ClientSession"),
                       ("requests", "requests.Session, one thread")):
        c = results["ceilings"].get(key)
        if c:
            lines.append(f"| {label} | {_n(c['per_second'])} | {_n(c['cpu_ms_per_post'], 3)} "
                         f"| {_pct(c['receiver_cpu_share'])} |")
    for key, label in PEERS.items():
        c = results.get("peers", {}).get(key)
        if c:
            lines.append(f"| {label}, {c['n']:,} tasks | {_n(c['per_second'])} "
                         f"({_ratio(c.get('vs_aiohttp'))} aiohttp) "
                         f"| {_n(c['cpu_ms_per_post'], 3)} | {_pct(c['receiver_cpu_share'])} |")
    if results.get("peers"):
        lines += ["", "Celery: the backlog is published first (not timed), then consumed; CPU "
                  "is the Celery worker's (all its processes), the Redis broker's share is in "
                  "the JSON file."]
    dbs = list(results["databases"])
    head = " | ".join(DB_LABELS.get(d, d) for d in dbs)
    lines += ["", "### activity_queue (persisted, retries and all)", "",
              f"| measurement | {head} |", "|---|" + "---:|" * len(dbs)]

    def row(label: str, fn) -> None:
        cells = []
        for d in dbs:
            try:
                cells.append(fn(results["databases"][d]))
            except (KeyError, TypeError):
                cells.append("–")
        lines.append(f"| {label} | {' | '.join(cells)} |")

    row(f"deliveries/s, backlog of {p['n']:,} rows over {p['hosts']} hosts",
        lambda d: _n(d["throughput"]["per_second"]))
    row("× aiohttp ceiling (target ≥ 0.5)",
        lambda d: _ratio(d["ratios"]["vs_aiohttp"]) + _mark(d["targets"]["vs_aiohttp >= 0.5"]))
    row("× requests loop", lambda d: _ratio(d["ratios"]["vs_requests"]))
    for key in PEERS:
        if _get(results, "peers", key, "per_second"):
            pool = key.split("_", 1)[1]
            row(f"× Celery on Redis, plain task ({pool} pool)",
                lambda d, key=key: _ratio(d["ratios"][f"vs_{key}"]))
    row("CPU ms per delivery (worker process, all threads)",
        lambda d: _n(d["throughput"]["cpu_ms_per_delivery"], 3))
    row("receiver (nginx) CPU during the run", lambda d: _pct(d["throughput"]
                                                                ["receiver_cpu_share"]))
    row(f"healthy deliveries/s, the same {p['n']:,} healthy rows and a tenth of all rows more "
        f"to {p['black_hole_hosts']} black-holed hosts (TIMEOUT {p['black_hole_timeout']:g} s)",
        lambda d: _n(d["black_hole"]["per_second"]))
    row("× all-healthy run (target ≥ 0.9)",
        lambda d: _ratio(d["ratios"]["black_hole_vs_healthy"])
        + _mark(d["targets"]["black_hole_vs_healthy >= 0.9"]))
    row("the same, median of the runs taken in turn (black-hole run / all-healthy run)",
        lambda d: _ratio(d["ratios"].get("black_hole_vs_healthy_paired_median")))
    if any(_get(d, "paused") for d in results["databases"].values()):
        row(f"healthy deliveries/s behind a paused host's {p['paused_n']:,} older due rows, "
            "× all-healthy run",
            lambda d: f"{_n(_get(d, 'paused', 'per_second'))}, "
                      f"{_ratio(d['ratios'].get('paused_vs_healthy'))}")
        row("the same once the worker has moved them to the end of the pause",
            lambda d: f"{_n(_get(d, 'paused_moved', 'per_second'))}, "
                      f"{_ratio(d['ratios'].get('paused_moved_vs_healthy'))}")
    if any(_get(d, "signed") for d in results["databases"].values()):
        row(f"signed deliveries/s (RSA-2048, draft-cavage), the same {p['n']:,} rows",
            lambda d: _n(d["signed"]["per_second"]))
        row("signing limit: RSA-2048 signatures/s, one thread per core",
            lambda d: f"{_n(d['signing_limit']['per_second'])} "
                      f"({d['signing_limit']['threads']} threads; one thread "
                      f"{_n(d['signing_limit']['one_thread_per_second'])})")
        row("signed × signing limit (target ≥ 0.7)",
            lambda d: _ratio(d["ratios"]["signed_vs_signing_limit"])
            + _mark(d["targets"]["signed_vs_signing_limit >= 0.7"]))
        row("the same, median of the runs taken in turn",
            lambda d: _ratio(d["ratios"].get("signed_vs_signing_limit_paired_median")))
        row("signed × unsigned deliveries/s",
            lambda d: _ratio(d["ratios"].get("signed_vs_unsigned")))
        row("CPU ms per signed delivery (worker process, all threads)",
            lambda d: _n(d["signed"]["cpu_ms_per_delivery"], 3))
        row("raw signed ceiling: aiohttp signing with our signer, no queue, no database; "
            "one process with two signing threads per core, × signing limit",
            lambda d: f"{_n(_get(d, 'signed_ceiling', 'per_second'))}, "
                      f"{_ratio(d['ratios'].get('signed_ceiling_vs_signing_limit'))}"
                      if _get(d, "signed_ceiling") else "–")
        row("the same, one process per core signing on its event loop, × signing limit",
            lambda d: f"{_n(_get(d, 'signed_ceiling_processes', 'per_second'))}, "
                      f"{_ratio(d['ratios'].get('signed_ceiling_processes_vs_signing_limit'))}"
                      if _get(d, "signed_ceiling_processes") else "–")
        row("signed × raw signed ceiling, one process",
            lambda d: _ratio(d["ratios"].get("signed_vs_signed_ceiling")))
    sizes = sorted({int(k) for d in results["databases"].values()
                    for k in (_get(d, "claims", "claims") or {})})
    for size in sizes:
        row(f"a 500-row claim behind a paused host's {size:,} older rows, due / moved, "
            "p50 ms", lambda d, size=size: _claims(d, size))

    row(f"enqueue() inside atomic, p50 / p99 µs ({p['enqueue_calls']:,} calls; "
        "target p50 < 500)", lambda d: _pair(d["enqueue"]["enqueue_us"])
        + _mark(d["targets"]["enqueue p50 < 500 us"]))
    row("enqueue() after the caller's own first statement, p50 / p99 µs",
        lambda d: _pair(d["enqueue"]["enqueue_in_open_transaction_us"]))
    row("raw: one plain `INSERT … VALUES` of the same row there, p50 / p99 µs",
        lambda d: _pair(d["enqueue"]["raw_insert_us"]))
    row("× raw INSERT (p50 after the first statement)",
        lambda d: _ratio(d["ratios"]["enqueue_vs_raw_insert"]))
    row("whole `with atomic(): enqueue()` incl. commit, p50 / p99 µs",
        lambda d: _pair(d["enqueue"]["atomic_block_us"]))
    row(f"commit → arrival at receiver, p50 / p99 ms ({p['latency_count']:,} at "
        f"{p['latency_rate']:g}/s)", lambda d: _pair(d["latency"]["commit_to_arrival_ms"], 1))
    row("commit → logged as sent, p50 / p99 ms",
        lambda d: _pair(d["latency"]["commit_to_logged_ms"], 1))
    if p["memory_n"]:
        row(f"peak RSS of a worker process draining {p['memory_n']:,} rows (MB)",
            lambda d: _n(d["memory"]["maxrss_kb"] / 1024, 1))
        row("RSS of that process before the worker started (MB)",
            lambda d: _n(d["memory"]["rss_before_kb"] / 1024, 1))
        row(f"deliveries/s draining {p['memory_n']:,} rows",
            lambda d: _n(d["memory"]["per_second"]))
    lines += ["", "CPU per delivery counts the worker process only (with SQLite, the database "
              "engine runs inside it; PostgreSQL's server processes are not counted)."]
    if p.get("repeat", 1) > 1:
        lines.append(f"Rates are the best of {p['repeat']} runs (ceilings, throughput, "
                     "black-hole, signed, signing limit, signed ceilings); every run's rate is "
                     "in the JSON file. The throughput, black-hole, signed, signing-limit and "
                     "signed-ceiling runs are taken in turn, one of each per round.")
    if results["errors"]:
        lines += ["", "### Errors", ""] + [f"- {e.splitlines()[0]}" for e in results["errors"]]
    return "\n".join(lines) + "\n"


def write(results: dict, text: str, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = results["started_at"].replace(":", "").replace("-", "").replace("+0000", "")
    stem = f"{stamp}{'-quick' if results['quick'] else ''}"
    paths = [out / f"{stem}.json", out / f"{stem}.md"]
    paths[0].write_text(json.dumps(results, indent=2) + "\n")
    paths[1].write_text(text)
    return paths
