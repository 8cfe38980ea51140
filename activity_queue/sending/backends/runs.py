"""Deliveries as the tasks of a task runner: what the Celery and Django Tasks backends share.

A task only says "look at the queue": it runs the same
:class:`~activity_queue.sending.worker.Worker` as ``activity_worker`` (claim with
a lease, deliver on one event loop, write the outcomes), one per runner
process, until nothing is due. The rows stay the source of truth, so a lost
task loses nothing: the next enqueue, the next timer or a periodic run sends
another, and rows held by a killed runner come back when their lease ends.

After each run the task sends itself to the next time a row becomes claimable
(a retry, the end of a lease or of a host's pause), so retries run on time
without a periodic entry; the periodic entry is the net for lost tasks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time

from django.db import connections, router
from django.db.models import Min

from ...models import PendingDiscovery, ScheduledActivity
from ..worker import Worker
from .marks import Marks

logger = logging.getLogger(__name__)

#: One run claims for at most this long, then finishes what it holds and hands
#: over to a new task: bounds a warm shutdown, and frees a runner's slot.
RUN_SECONDS = 30.0
#: No timer is set further ahead (Redis redelivers an ETA message held past its
#: visibility timeout, one hour by default), nor sooner than TIMER_FLOOR.
TIMER_HORIZON = 300.0
TIMER_FLOOR = 0.2
#: A failed run tries again after this many seconds.
ERROR_DELAY = 5.0


def namespace(using: str) -> str:
    """Marks of this site's database: sites sharing a Redis or a cache do not mix."""
    name = f"{using}:{connections[using].settings_dict.get('NAME')}"
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:12]
    return f"activity_queue:{digest}"


class TaskRuns:
    """One task runner's way of sending the task, and each runner process's worker.

    Subclasses say how a task is sent (:meth:`send`), whether a delayed one
    runs later rather than now (:meth:`defers`), and where the marks that keep
    a burst of commits from becoming a burst of tasks are kept (:meth:`marks`).
    """

    #: The logger that names the backend in its warnings.
    log = logger

    def __init__(self) -> None:
        self._state: _Process | None = None
        self._state_lock = threading.Lock()

    def marks(self, using: str) -> Marks:
        raise NotImplementedError

    def send(self, countdown: float | None = None) -> None:
        """Send the task: now, or to run in ``countdown`` seconds."""
        raise NotImplementedError

    def defers(self) -> bool:
        """False when a task runs as it is sent (an eager or immediate runner)."""
        return True

    def wake(self, using: str) -> None:
        """``transaction.on_commit`` of an enqueue: send one task unless one is queued.

        Never raises: the rows are committed, and a runner that cannot be
        reached only delays them until the next run.
        """
        marks = None
        try:
            marks = self.marks(using)
            if marks.set_wake():
                self.send()
        except Exception:
            self.log.warning("activity_queue: could not send the wake-up task; the queued "
                             "rows wait for the next run", exc_info=True)
            if marks is not None:
                try:
                    marks.clear_wake()
                except Exception:
                    self.log.debug("clearing the wake mark failed", exc_info=True)

    def run(self) -> None:
        """The task's body: deliver what is due, then set a timer for what is due later."""
        self.process().run(self)

    def process(self) -> _Process:
        """This process's state; a forked child (a prefork pool) makes its own."""
        with self._state_lock:
            if self._state is None or self._state.pid != os.getpid():
                self._state = _Process()
            return self._state

    def stop_claiming(self) -> None:
        """Warm shutdown: a run in this process stops claiming and finishes what it holds."""
        state = self._state
        if state is not None and state.pid == os.getpid() and state.worker is not None:
            state.worker.stop()

    def shut_down(self) -> None:
        """Process shutdown: hand back what this process's worker holds, and forget it."""
        with self._state_lock:
            state, self._state = self._state, None
        if state is not None and state.pid == os.getpid():
            state.shutdown()

    def schedule_next(self) -> None:
        """Send the task to run when the next row becomes claimable, if any."""
        alias = router.db_for_write(ScheduledActivity)
        times = [
            ScheduledActivity.objects.using(alias).next_claimable(),
            PendingDiscovery.objects.using(alias).aggregate(at=Min("next_attempt_at"))["at"],
        ]
        at = min((t for t in times if t is not None), default=None)
        if at is not None:
            self._set_timer(at.timestamp())

    def _set_timer(self, at: float) -> None:
        if not self.defers():
            return  # it would run now, not at ``at``: retries wait for the next run
        now = time.time()
        at = min(max(at, now + TIMER_FLOOR), now + TIMER_HORIZON)
        if self.marks(router.db_for_write(ScheduledActivity)).set_timer(at, now):
            self.send(countdown=at - now)

    def retry_later(self) -> None:
        try:
            self._set_timer(time.time() + ERROR_DELAY)
        except Exception:
            self.log.warning("activity_queue: could not set a timer after a failed run; the "
                             "queued rows wait for the next run", exc_info=True)


class _Process:
    """One worker per runner process; concurrent tasks in it share its run."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.requested = threading.Event()
        self.worker: Worker | None = None

    def run(self, runs: TaskRuns) -> None:
        self.requested.set()
        if self.worker is not None:
            self.worker.wake()  # a run in progress claims sooner
        deadline = time.monotonic() + RUN_SECONDS
        ran = False
        # A task that finds the run busy leaves its request for it; the loop
        # catches a request made just as the run was ending.
        while (self.requested.is_set() and time.monotonic() < deadline
               and self.lock.acquire(blocking=False)):
            try:
                self._passes(runs, deadline)
                ran = True
            except Exception:
                _close_connection()
                runs.retry_later()
                raise
            finally:
                self.lock.release()
        if ran:
            runs.schedule_next()

    def _passes(self, runs: TaskRuns, deadline: float) -> None:
        marks = runs.marks(router.db_for_write(ScheduledActivity))
        if self.worker is None:
            self.worker = Worker()
        while self.requested.is_set() and time.monotonic() < deadline:
            self.requested.clear()
            marks.clear_wake()  # from here on, a commit sends its own task
            self.worker.run_until_idle(deadline)

    def shutdown(self) -> None:
        """Finish or hand back what this process holds (a drain may still be ending)."""
        worker = self.worker
        if worker is None:
            return
        worker.stop()
        if self.lock.acquire(timeout=worker.grace + 5):
            try:
                worker._shutdown()
            finally:
                self.lock.release()


def _close_connection() -> None:
    try:
        connections[router.db_for_write(ScheduledActivity)].close()
    except Exception:
        logger.debug("closing the connection failed", exc_info=True)
