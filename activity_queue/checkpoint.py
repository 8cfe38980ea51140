"""Copies SQLite's write-ahead log back into the database from a thread of its own.

SQLite does that copy (a checkpoint) inside whichever commit finds more than
``wal_autocheckpoint`` pages in the log (1,000 by default). The worker is the
heaviest writer, so that was mostly its own resolve commits: reading and
writing some 4 MB every few batches while its deliveries waited. Python's
``sqlite3`` releases the GIL while SQLite works, so here the copy runs beside
the worker, on another core (bench/, measured in turn: +3-4 % deliveries/s, and
with the covering due index the black-hole ratio 0.875x -> 0.945x, per round).

The worker's own commits keep a backstop, :data:`BACKSTOP_PAGES`: the log only
starts again from its beginning when a transaction begins with every page of
it copied, and a busy worker always begins its next one while this thread is
still copying; with no checkpoint of its own the log grew by 100 MB a second
while a backlog drained. With the backstop the worker's commit copies what this
thread has not yet copied, the log restarts, and it stays under ~17 MB. Other
connections (the site's) keep SQLite's default.
"""

from __future__ import annotations

import logging
import threading

from django.db import connections

logger = logging.getLogger(__name__)

#: ``wal_autocheckpoint`` of the worker's own connection, in pages: 1,000 gave 13,200
#: deliveries/s in bench/, 4,000 14,000 and 10,000 14,700 (one sitting each).
BACKSTOP_PAGES = 4_000
#: ``journal_size_limit`` of the worker's connection, in bytes: the log file is cut back to
#: this when the log restarts. This thread keeps a connection open, so the file is never
#: deleted; a long read transaction elsewhere can make the log grow to hundreds of MB,
#: and the file kept that size after (a review measured 210 MB left behind).
LOG_FILE_LIMIT = 2 * BACKSTOP_PAGES * 4096
#: Seconds between two checkpoints at least, while the worker writes.
EVERY = 0.05
#: Seconds between checkpoints when the worker has not written (other processes may).
IDLE_EVERY = 1.0


def uses_wal(alias: str) -> bool:
    """Whether ``alias`` is an SQLite database in write-ahead-log mode."""
    connection = connections[alias]
    if connection.vendor != "sqlite":
        return False
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        return str(cursor.fetchone()[0]).lower() == "wal"


class Checkpointer:
    """A daemon thread that runs ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its
    own soon after the owner writes (:meth:`kick`), every :data:`EVERY` seconds at most.

    PASSIVE waits for no reader and no writer: it copies what it can and leaves the
    rest for the next pass, so the worker's transactions never wait for it, and it
    never takes the write lock (no "database is locked" for anyone). The thread that
    creates it owns it: only that thread's connection is adopted.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._owner = threading.get_ident()
        self._kicked = threading.Event()
        self._stopping = threading.Event()
        self._adopted: object | None = None
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="activity-queue-checkpoint",
                                        daemon=True)
        self._thread.start()

    def adopt(self) -> None:
        """Lower the checkpoints of the owner's connection to the backstop; called before
        the owner writes, connecting if need be.

        A pragma of the connection, not of the database: set again after the worker
        reconnects (it closes its connection when idle and after errors). A no-op on
        other threads (a shutdown from a signal handler), whose connections are the
        site's; in a Celery threads pool, the task threads other than the first keep
        SQLite's own checkpoints, which are bounded too.
        """
        if threading.get_ident() != self._owner:
            return
        connection = connections[self.alias]
        if connection.connection is None:
            connection.ensure_connection()
        if connection.connection is self._adopted:
            return
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
            cursor.execute(f"PRAGMA journal_size_limit = {LOG_FILE_LIMIT}")
        self._adopted = connection.connection

    def kick(self) -> None:
        """The owner wrote: checkpoint soon."""
        self._kicked.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Checkpoint once more, then end the thread and close its connection."""
        self._stopping.set()
        self._kicked.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._kicked.wait(IDLE_EVERY)
                self._kicked.clear()
                if not self._stopping.is_set():
                    self._checkpoint()
                    self._stopping.wait(EVERY)
            self._checkpoint()
        finally:
            connections[self.alias].close()

    def _checkpoint(self) -> None:
        try:
            with connections[self.alias].cursor() as cursor:
                cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
                cursor.fetchall()
        except Exception:
            # Once per run of failures: the backstop keeps the log bounded meanwhile.
            log = logger.debug if self._failing else logger.exception
            log("activity_queue: checkpointing the SQLite log failed; trying again")
            self._failing = True
            try:
                connections[self.alias].close()
            except Exception:
                logger.debug("closing the checkpoint connection failed", exc_info=True)
        else:
            self._failing = False
