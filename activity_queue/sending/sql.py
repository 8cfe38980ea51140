"""Small pieces of SQL the queue and the host health share: the database, bound values.

Three dialects: SQLite and PostgreSQL change many rows and read them back in one
statement (``RETURNING``); MySQL and MariaDB have no ``UPDATE … RETURNING`` (MySQL no
``RETURNING`` at all), so there a transaction locks the rows (``FOR UPDATE``, ``SKIP
LOCKED`` where another worker may hold them), then changes them by id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from django.db import OperationalError, router

from ..models import ScheduledActivity

#: Rows per statement, under SQLite's limit of bound parameters.
CHUNK = 900

#: The columns a row moving from the queue to the log (``Activity``) fills.
LOG_COLUMNS = """activity_id, activity_type, object_id, inbox, host, payload_id, direction,
                 status, status_code, error, response_excerpt, attempts, created_at,
                 resolved_at, duration_ms"""


def alias() -> str:
    return router.db_for_write(ScheduledActivity)


def locked(exc: BaseException) -> bool:
    """SQLite's write lock stayed taken for the whole busy ``timeout``: a wait, not a fault."""
    return isinstance(exc, OperationalError) and "database is locked" in str(exc)


def dt(connection, value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


def chunks(seq: Sequence, size: int = CHUNK) -> Iterable[Sequence]:
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


def placeholders(n: int) -> str:
    return ", ".join(["%s"] * n)


def values_list(connection, rows: list[list], casts: Sequence[str]) -> tuple[str, list]:
    """A ``VALUES`` list; PostgreSQL needs the first row typed, SQLite needs nothing."""
    pg = connection.vendor == "postgresql"
    first = ", ".join(f"CAST(%s AS {c})" if pg else "%s" for c in casts)
    rest = "(" + placeholders(len(casts)) + ")"
    sql = "VALUES (" + first + ")" + "".join(", " + rest for _ in rows[1:])
    return sql, [p for row in rows for p in row]


def mysql(connection) -> bool:
    """MySQL or MariaDB (Django's ``mysql`` backend serves both)."""
    return connection.vendor == "mysql"


def derived(rows: list[list], names: Sequence[str]) -> tuple[str, list]:
    """A table of bound rows as a ``SELECT … UNION ALL SELECT …``: the one form MySQL 8
    (``VALUES ROW(…)``) and MariaDB (``VALUES (…)``) both read."""
    first = "SELECT " + ", ".join(f"%s AS {name}" for name in names)
    rest = " UNION ALL SELECT " + placeholders(len(names))
    return first + rest * (len(rows) - 1), [p for row in rows for p in row]
