"""Timers around the worker's database calls (``activity_queue.sending.queue``), for profiling.

Wall time and the calling thread's CPU time per call, and rows per call, so
the database side of a delivery can be told apart from the rest.
"""

from __future__ import annotations

import functools
import time

from activity_queue.sending import queue as store

TIMED = ("claim", "resolve", "renew", "release", "tripped_hosts", "defer_backlog",
         "defer_paused")


def _rows(name: str, args: tuple, result) -> int:
    if name == "claim":
        return len(result)
    if name == "resolve":
        return len(args[1])
    if name in ("renew", "release"):
        return len(args[1])
    if name in ("defer_backlog", "defer_paused"):
        return result  # rows moved
    return 0


def install() -> dict[str, dict[str, float]]:
    """Wrap the store functions the worker calls; returns the live statistics."""
    present = [name for name in TIMED if hasattr(store, name)]
    stats = {name: {"calls": 0, "empty": 0, "rows": 0, "wall_s": 0.0, "cpu_s": 0.0}
             for name in present}
    for name in present:
        original = getattr(store, name)

        @functools.wraps(original)
        def timed(*args, _original=original, _name=name, **kwargs):
            t0, c0 = time.perf_counter(), time.thread_time()
            result = _original(*args, **kwargs)
            entry = stats[_name]
            entry["calls"] += 1
            rows = _rows(_name, args, result)
            entry["rows"] += rows
            entry["empty"] += not rows
            entry["wall_s"] += time.perf_counter() - t0
            entry["cpu_s"] += time.thread_time() - c0
            return result

        setattr(store, name, timed)
    return stats
