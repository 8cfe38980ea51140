"""Writes outcomes from a thread of its own, so that a batch is written while the next is claimed.

The worker's database side is a chain of round trips: with one thread, the
server's work for a claim and for a write add up, and the worker waits for
both. PostgreSQL serves two connections at once, so there the worker hands
each batch of outcomes to this writer and goes on claiming; SQLite has a
single writer, so there the worker writes inline.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connections

from .hosts import Retired
from .jobs import Outcome

#: ``write(outcomes) -> (written, hosts whose circuit opened, hosts retired)``: the worker's
#: :func:`store.resolve`, then :func:`hosts.retire` for the hosts that became unavailable.
Write = Callable[[list[Outcome]], tuple[list[Outcome], list[str], list[Retired]]]


@dataclass
class Written:
    outcomes: list[Outcome]
    written: list[Outcome] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    retired: list[Retired] = field(default_factory=list)
    error: Exception | None = None


class BackgroundWriter:
    """One batch at a time; the owner polls :meth:`result` and is woken when one is ready."""

    def __init__(self, write: Write, wake: Callable[[], None]) -> None:
        self._write = write
        self._wake = wake
        self._todo: queue.SimpleQueue[list[Outcome] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Written] = queue.SimpleQueue()
        #: Ids of the rows in the batch being written (owner's thread only).
        self.ids: set[int] = set()
        self._thread = threading.Thread(target=self._run, name="activity-queue-writer",
                                        daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return bool(self.ids)

    def submit(self, outcomes: list[Outcome]) -> None:
        if self.busy:
            raise RuntimeError("the writer is still writing the previous batch")
        self.ids = {o.job.id for o in outcomes}
        self._todo.put(outcomes)

    def result(self, timeout: float | None = None) -> Written | None:
        """The finished batch, if any (waiting up to ``timeout`` seconds for it)."""
        try:
            done = self._done.get(timeout=timeout) if timeout else self._done.get_nowait()
        except queue.Empty:
            return None
        self.ids = set()
        return done

    def stop(self, timeout: float = 60) -> None:
        self._todo.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while (outcomes := self._todo.get()) is not None:
                try:
                    done = Written(outcomes, *self._write(outcomes))
                except Exception as exc:
                    for connection in connections.all(initialized_only=True):
                        connection.close()  # the next batch reconnects
                    done = Written(outcomes, error=exc)
                self._done.put(done)
                self._wake()
        finally:
            connections.close_all()
