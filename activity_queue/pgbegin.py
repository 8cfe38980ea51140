"""On PostgreSQL, a transaction's first statement sent together with its ``BEGIN``.

``enqueue()`` is often the first statement of the caller's transaction
(``with atomic(): enqueue(...)``, or ``enqueue()`` outside any transaction,
which opens its own). psycopg then sends ``BEGIN`` alone and waits for its
answer before it sends the statement: two round trips to the server where
one would do. On loopback that second trip was about a quarter of
``enqueue()`` (p50 in ``bench/``: 520 µs as the first statement, 397 µs after
another one; 438 µs as the first statement with this module). Pipeline mode
does not help: psycopg syncs after the ``BEGIN`` it queues. psycopg 3 only.

So, only when the transaction has not started yet, the ``BEGIN`` and the
statement go to the server as one simple query, with the parameters bound
on the client as psycopg's ``ClientCursor`` (Django's default) binds them,
and the answer is read through psycopg's own wait loop.
psycopg reads the transaction status from libpq and so sees the transaction
open afterwards: it sends no ``BEGIN`` of its own and commits or rolls back
as usual. In every other case (a transaction already open, an isolation
level or read-only mode set on the connection, pipeline mode, Django's
query logging or execute wrappers, which must see every statement, and
cursors that bind on the server, as with ``server_side_binding``, whose
values must stay out of the query text) the statement is left to the
ordinary cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def fetch_opening(connection, sql: str, params: Sequence[Any]) -> list[tuple[str, ...]] | None:
    """The rows of ``sql`` in PostgreSQL's text format, ``None`` when it was not sent (see
    the module docstring: the caller then runs it on a cursor)."""
    raw = connection.connection
    pgconn = getattr(raw, "pgconn", None)  # psycopg 3's; psycopg2 has no such door
    if pgconn is None or raw.autocommit or connection.queries_logged or (
            connection.execute_wrappers):
        return None
    from psycopg import ClientCursor, errors, generators, pq

    # When the connection's cursors bind on the server (``server_side_binding``, or a
    # cursor_factory of the site's), the values must stay out of the query text.
    if (not issubclass(raw.cursor_factory, ClientCursor)
            or pgconn.transaction_status != pq.TransactionStatus.IDLE
            or pgconn.pipeline_status != pq.PipelineStatus.OFF
            or raw.isolation_level is not None or raw.read_only is not None
            or raw.deferrable is not None):
        return None
    connection.validate_no_broken_transaction()
    encoding = raw.info.encoding
    query = b"BEGIN; " + ClientCursor(raw).mogrify(sql, params).encode(encoding)
    # Through psycopg's own wait loop, as its cursors do, not libpq's blocking PQexec: a
    # signal interrupts it (and cancels the query), gevent can switch meanwhile, and a
    # lost connection keeps its SQLSTATE (OperationalError, not a bare DatabaseError).
    with connection.wrap_database_errors, raw.lock:
        pgconn.send_query(query)
        results = raw.wait(generators.execute(pgconn))
        for result in results:
            if result.status == pq.ExecStatus.FATAL_ERROR:
                raise errors.error_from_result(result, encoding=encoding)
        result = results[-1]
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise errors.InterfaceError(f"unexpected answer to {sql[:40]!r}…: "
                                        f"{pq.ExecStatus(result.status).name}")
    width = result.nfields
    return [tuple(result.get_value(i, j).decode(encoding) for j in range(width))
            for i in range(result.ntuples)]
