"""``manage.py activity_status``: the queue's health, for people and for monitors.

Exit status 0 when healthy or degraded, 1 when unhealthy, 2 for bad usage.
Unhealthy means: the most overdue row that a worker could take now (not leased,
its host's circuit not open) has waited longer than ``--max-lag`` past its due
time (no worker is running, or they cannot keep up); or, when asked, the queue
is deeper than ``--max-depth``, or a circuit is open (``--fail-on-open-circuit``).
Degraded means a circuit is open and that was not asked: the queue works, a
remote server does not.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.timesince import timesince

from ...lifecycle import State
from ...models import Host
from ...operations import stats as health
from ..options import parse_duration, positive_int


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _rows(n: int, verb: str, verbs: str) -> str:
    """``1 row waits``, ``3 rows wait``."""
    return f"1 row {verb}" if n == 1 else f"{n} rows {verbs}"


def _paused_for(host: Host, now: datetime) -> float | None:
    if host.paused_until is None or host.paused_until <= now:
        return None
    return math.ceil((host.paused_until - now).total_seconds())


def _until(host: Host, now: datetime) -> str:
    """``paused until 12:03:04 (in 42 s)`` in the site's time zone, or the next step."""
    left = _paused_for(host, now)
    if host.unavailable_by:
        return "stopped by hand"
    if left is None:
        return "its next delivery is a probe" if host.circuit == "half-open" else ""
    at = f"{timezone.localtime(host.paused_until):%H:%M:%S}"
    if host.unavailable:
        return f"next probe at {at} (in {left:.0f} s)"
    return f"paused until {at} (in {left:.0f} s)"


class Command(BaseCommand):
    help = ("Print queue depth, oldest pending, due now, in flight, recent failures per host, "
            "redundant drops, circuit states and unavailable hosts; exit 1 when the queue is "
            "unhealthy.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="One JSON object on stdout.")
        parser.add_argument("--max-lag", type=parse_duration, default=300.0,
                            help="Unhealthy when a claimable row is overdue by more than this "
                                 "(seconds or 30s/5m/1h; default 5m).")
        parser.add_argument("--max-depth", type=positive_int, default=None,
                            help="Also unhealthy when more rows than this are queued.")
        parser.add_argument("--fail-on-open-circuit", action="store_true",
                            help="Also unhealthy when any host's circuit is open (otherwise "
                                 "an open circuit is 'degraded', exit status 0).")
        parser.add_argument("--window", type=parse_duration, default=3600.0,
                            help="Failures per host are counted over this (default 1h).")

    def handle(self, *args, as_json=False, max_lag=300.0, max_depth=None,
               fail_on_open_circuit=False, window=3600.0, **options) -> None:
        now = timezone.now()
        stats = health.queue_stats(now)
        since = now - timedelta(seconds=window)
        failing = health.failing_hosts(since, limit=20)
        troubled = health.troubled_hosts()
        problems = []
        if stats.lag > max_lag:
            problems.append(f"a claimable row is {stats.lag:.0f}s overdue (max {max_lag:.0f}s)")
        if max_depth is not None and stats.depth > max_depth:
            problems.append(f"{stats.depth} rows queued (max {max_depth})")
        open_circuits = [h.host for h in troubled if h.circuit == "open"]
        warnings = []
        if open_circuits:
            opened = f"circuit open for {', '.join(open_circuits)}"
            if fail_on_open_circuit:
                problems.append(opened)
            else:
                warnings.append(opened)
        status = "unhealthy" if problems else "degraded" if warnings else "healthy"
        report = {
            "status": status,
            "healthy": not problems,
            "problems": problems,
            "warnings": warnings,
            "now": _iso(now),
            "queue": {
                "depth": stats.depth, "due": stats.due, "due_paused": stats.due_paused,
                "waiting_for_paused": stats.waiting_for_paused,
                "waiting_for_failing": stats.waiting_for_failing,
                "in_flight": stats.in_flight, "oldest_pending": _iso(stats.oldest_pending),
                "oldest_pending_age_s": stats.oldest_pending_age, "lag_s": stats.lag,
            },
            "dropped": health.count_since(State.DROPPED, since),
            "failures": {"window_s": window, "hosts": [
                {"host": f.host, "failures": f.failures, "circuit": f.circuit,
                 "paused_until": _iso(f.paused_until)}
                for f in failing]},
            "circuits": [
                {"host": h.host, "circuit": h.circuit, "state": h.circuit,
                 "paused_until": _iso(h.paused_until), "paused_for_s": _paused_for(h, now),
                 "consecutive_failures": h.consecutive_failures, "last_error": h.last_error,
                 "unavailable_since": _iso(h.unavailable_since)}
                for h in troubled],
            "unavailable": [
                {"host": h.host, "since": _iso(h.unavailable_since),
                 "failing_since": _iso(h.failing_since), "stopped_by": h.unavailable_by,
                 "next_probe": None if h.unavailable_by else _iso(h.paused_until)}
                for h in troubled if h.unavailable],
        }
        if as_json:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True))
        else:
            self.stdout.write(self.text(report, stats, failing, troubled))
        if problems:
            raise CommandError("unhealthy: " + "; ".join(problems), returncode=1)

    @staticmethod
    def text(report, stats, failing, troubled) -> str:
        q = report["queue"]
        now = stats.now
        window = _span(report["failures"]["window_s"])
        oldest = (f"{timesince(stats.oldest_pending, now)} ago "
                  f"({q['oldest_pending']})" if stats.oldest_pending else "-")
        paused, waiting = q["waiting_for_paused"], q["waiting_for_failing"]
        lines = [
            f"queue depth     {q['depth']}",
            f"due now         {q['due']}" + (f" ({q['due_paused']} for paused hosts)"
                                             if q["due_paused"] else ""),
            *([f"paused hosts    {_rows(paused, 'waits', 'wait')} for the end of a pause"]
              if paused else []),
            *([f"failing hosts   {_rows(waiting, 'waits', 'wait')} for "
               f"{'its host' if waiting == 1 else 'their host'} to answer"]
              if waiting else []),
            f"in flight       {q['in_flight']}",
            f"oldest pending  {oldest}",
            f"overdue by      {q['lag_s']:.0f}s",
            f"dropped         {report['dropped']} as redundant in the last {window}",
            f"final failures per host in the last {window} (not delivered since):",
        ]
        width = max((len(h.host) for h in [*failing, *troubled]), default=0)
        lines += [f"  {f.host:<{width}}  {f.failures:>6}  circuit {f.circuit}"
                  for f in failing] or ["  none"]
        lines.append("circuits:")
        for h in troubled:
            streak = (f"{h.consecutive_failures} failure in a row" if h.consecutive_failures == 1
                      else f"{h.consecutive_failures} failures in a row")
            line = f"  {h.host:<{width}}  {h.circuit:<9}  {streak}"
            if h.unavailable:
                line += f"  unavailable since {_iso(h.unavailable_since)}"
            if until := _until(h, now):
                line += f"  {until}"
            lines.append(line)
        if not troubled:
            lines.append("  all closed")
        if report["problems"]:
            verdict = "UNHEALTHY: " + "; ".join(report["problems"])
        elif report["warnings"]:
            verdict = ("degraded: " + "; ".join(report["warnings"]) + " (their rows wait for "
                       "the pause to end; exit status 0, --fail-on-open-circuit makes it 1)")
        else:
            verdict = "healthy"
        lines.append("status          " + verdict)
        return "\n".join(lines)
