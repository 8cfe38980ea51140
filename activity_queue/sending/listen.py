"""Cross-process wake-ups on PostgreSQL: ``NOTIFY`` at enqueue, ``LISTEN`` in the worker.

A dedicated worker in another process cannot see the in-process event that
``transaction.on_commit`` sets, so on PostgreSQL the enqueue's INSERT also sends a
notification, which the server delivers only if the transaction commits.
On SQLite a dedicated worker polls every ``POLL_INTERVAL`` seconds.
"""

from __future__ import annotations

import logging
import threading

from django.db import connections

logger = logging.getLogger(__name__)

#: The channel ``enqueue()`` notifies (its stored function, migration 0012).
CHANNEL = "activity_queue"
#: Seconds between attempts to listen again; the worker polls meanwhile.
RETRY_EVERY = 1.0


class Listener:
    """A thread with its own connection that sets ``event`` on every notification."""

    def __init__(self, using: str, event: threading.Event, stopping: threading.Event) -> None:
        self.using = using
        self.event = event
        self.stopping = stopping
        self.thread = threading.Thread(target=self._run, name="activity-queue-listen",
                                       daemon=True)

    @staticmethod
    def supported(using: str) -> bool:
        return connections[using].vendor == "postgresql"

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        import psycopg

        wrapper = connections[self.using]
        params = wrapper.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        failing = False
        while not self.stopping.is_set():
            try:
                with psycopg.connect(**params, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if failing:
                        logger.info("activity_queue: LISTEN connection back")
                        failing = False
                    self.event.set()  # anything committed while we were away
                    while not self.stopping.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.event.set()
            except Exception as exc:
                # Once per outage: the worker itself reports the database's state.
                if not failing:
                    logger.warning("activity_queue: LISTEN connection failed (%s); retrying "
                                   "every %.0f s", str(exc).strip().splitlines()[0]
                                   if str(exc).strip() else type(exc).__name__, RETRY_EVERY)
                failing = True
                self.stopping.wait(RETRY_EVERY)
