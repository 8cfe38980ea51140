"""Copies SQLite's write-ahead log back into the database from a thread of its own.

SQLite does that copy (a checkpoint) inside whichever commit finds more than
``wal_autocheckpoint`` pages in the log. The worker is the heaviest writer, so
that was mostly its own resolve commits: reading, writing and syncing some
4 MB every few batches while its deliveries waited (bench/: 11,700 against
13,800 deliveries/s once the copy left the worker's thread). Python's
``sqlite3`` releases the GIL while SQLite works, so here the copy runs beside
the worker, on another core. Only the worker's own connection stops
checkpointing; other connections (the site's) keep SQLite's default.
"""

from __future__ import annotations

import logging
import threading

from django.db import connections

logger = logging.getLogger(__name__)

#: Seconds between two checkpoints at least, while the worker writes: the log restarts
#: from its beginning once fully copied, so it stays a few MB.
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
    never takes the write lock (no "database is locked" for anyone).
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._kicked = threading.Event()
        self._stopping = threading.Event()
        self._adopted: object | None = None
        self._thread = threading.Thread(target=self._run, name="activity-queue-checkpoint",
                                        daemon=True)
        self._thread.start()

    def adopt(self) -> None:
        """Stop the calling thread's connection from checkpointing in its commits; called
        before the owner writes, connecting if need be.

        A pragma of the connection, not of the database: set again after the worker
        reconnects (it closes its connection when idle and after errors).
        """
        connection = connections[self.alias]
        if connection.connection is None:
            connection.ensure_connection()
        if connection.connection is self._adopted:
            return
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_autocheckpoint = 0")
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
            logger.exception("activity_queue: checkpointing the SQLite log failed; "
                             "trying again at the next pass")
            connections[self.alias].close()
