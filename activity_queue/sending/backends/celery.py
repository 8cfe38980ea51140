"""The Celery backend: deliveries run in the site's Celery workers, woken through its broker.

A message only says "look at the queue": the task ``activity_queue.deliver_due``
runs the same :class:`~activity_queue.sending.worker.Worker` as ``activity_worker``
(claim with a lease, deliver on one event loop, write the outcomes), one per
Celery worker process, until nothing is due. The rows stay the source of
truth, so a lost message loses nothing: the next enqueue, the next timer or
the beat entry runs the task again, and rows held by a killed worker come
back when their lease ends.

After each run the task sends itself with a countdown to the next time a row
becomes claimable (a retry, the end of a lease or of a host's pause), so
retries run on time with no beat; the beat entry is the net for lost messages.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time

from celery import shared_task
from celery import signals as celery_signals
from django.db import connections, router
from django.db.models import Min

from ...models import PendingDiscovery, ScheduledActivity
from ..worker import Worker
from .marks import Marks, marks_for

logger = logging.getLogger(__name__)

TASK_NAME = "activity_queue.deliver_due"
#: One run of the task claims for at most this long, then finishes what it holds and
#: hands over to a new message: bounds a warm shutdown, and frees a solo pool.
RUN_SECONDS = 30.0
#: No timer is set further ahead (Redis redelivers an ETA message held past its
#: visibility timeout, one hour by default), nor sooner than TIMER_FLOOR.
TIMER_HORIZON = 300.0
TIMER_FLOOR = 0.2
#: A failed run tries again after this many seconds.
ERROR_DELAY = 5.0
#: Publishing a wake-up retries this little: the request that committed is waiting.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                 "interval_max": 0.5}


@shared_task(name=TASK_NAME, ignore_result=True)
def deliver_due() -> None:
    """Deliver what is due with this process's worker, then set a timer for what is due later."""
    _process().run()


def wake(using: str) -> None:
    """``transaction.on_commit`` of an enqueue: send one ``deliver_due`` unless one is queued.

    Never raises: the rows are committed, and a broker that cannot be reached
    only delays them until the next run (the beat entry).
    """
    marks = None
    try:
        marks = marks_for_alias(using)
        if marks.set_wake():
            deliver_due.apply_async(retry=True, retry_policy=PUBLISH_RETRY)
    except Exception:
        logger.warning("activity_queue: could not send the wake-up to Celery; the queued "
                       "rows wait for the next run (beat entry %s)", TASK_NAME, exc_info=True)
        if marks is not None:
            try:
                marks.clear_wake()
            except Exception:
                logger.debug("clearing the wake mark failed", exc_info=True)


def marks_for_alias(using: str) -> Marks:
    """This site's marks: namespaced by the database, so sites sharing a Redis do not mix."""
    app = deliver_due.app
    url = app.conf.broker_write_url or app.conf.broker_url
    name = f"{using}:{connections[using].settings_dict.get('NAME')}"
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:12]
    return marks_for(url if isinstance(url, str) else None, f"activity_queue:{digest}")


class _Process:
    """One worker per Celery worker process; concurrent tasks in it share its run."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.requested = threading.Event()
        self.worker: Worker | None = None

    def run(self) -> None:
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
                self._passes(deadline)
                ran = True
            except Exception:
                _close_connection()
                _retry_later()
                raise
            finally:
                self.lock.release()
        if ran:
            schedule_next()

    def _passes(self, deadline: float) -> None:
        alias = router.db_for_write(ScheduledActivity)
        marks = marks_for_alias(alias)
        if self.worker is None:
            self.worker = Worker()
        while self.requested.is_set() and time.monotonic() < deadline:
            self.requested.clear()
            marks.clear_wake()  # from here on, a commit sends its own message
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


_state: _Process | None = None
_state_lock = threading.Lock()


def _process() -> _Process:
    """This process's state; a forked child (prefork pool) makes its own."""
    global _state
    with _state_lock:
        if _state is None or _state.pid != os.getpid():
            _state = _Process()
        return _state


def schedule_next() -> None:
    """Send the task with a countdown to when the next row becomes claimable, if any."""
    alias = router.db_for_write(ScheduledActivity)
    times = [
        ScheduledActivity.objects.using(alias).next_claimable(),
        PendingDiscovery.objects.using(alias).aggregate(at=Min("next_attempt_at"))["at"],
    ]
    at = min((t for t in times if t is not None), default=None)
    if at is not None:
        _set_timer(at.timestamp())


def _set_timer(at: float) -> None:
    if deliver_due.app.conf.task_always_eager:
        return  # an eager task runs now, not at ``at``: retries wait for the next run
    now = time.time()
    at = min(max(at, now + TIMER_FLOOR), now + TIMER_HORIZON)
    if marks_for_alias(router.db_for_write(ScheduledActivity)).set_timer(at, now):
        deliver_due.apply_async(countdown=at - now)


def _retry_later() -> None:
    try:
        _set_timer(time.time() + ERROR_DELAY)
    except Exception:
        logger.warning("activity_queue: could not set a timer after a failed run; the "
                       "queued rows wait for the next run (beat entry %s)", TASK_NAME,
                       exc_info=True)


def _close_connection() -> None:
    try:
        connections[router.db_for_write(ScheduledActivity)].close()
    except Exception:
        logger.debug("closing the connection failed", exc_info=True)


@celery_signals.worker_shutting_down.connect
def _stop_claiming(**kwargs) -> None:
    """Warm shutdown: a run in this process stops claiming and finishes what it holds."""
    state = _state
    if state is not None and state.pid == os.getpid() and state.worker is not None:
        state.worker.stop()


@celery_signals.worker_process_shutdown.connect
@celery_signals.worker_shutdown.connect
def _shut_down(**kwargs) -> None:
    state = _state
    if state is not None and state.pid == os.getpid():
        state.shutdown()
