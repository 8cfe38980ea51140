"""What a large fan-out backlog costs on disk: database bytes per pending delivery.

``python -m bench.backlog [--activities 1000] [--inboxes 1000] [--db sqlite|postgres|mysql]``
enqueues each activity (~1 KB, ``bench/payload.py``) to every inbox, one
``enqueue()`` call per activity as a site would, then prints the bytes of
each table and index of the app and their sum divided by the queued
deliveries. On SQLite the figures come from ``dbstat`` (pages in use); on
PostgreSQL from ``pg_total_relation_size`` after ``VACUUM``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--activities", type=int, default=1000)
    p.add_argument("--inboxes", type=int, default=1000)
    p.add_argument("--db", choices=["sqlite", "postgres", "mysql"], default="sqlite")
    p.add_argument("--out", help="write the result as JSON to this file too")
    args = p.parse_args(argv)
    os.environ["AQ_BENCH_DB"] = args.db
    if args.db == "postgres":
        from .run import ensure_postgres_database

        ensure_postgres_database(os.environ.get("AQ_BENCH_PG_NAME", "bench_aq"))
    if args.db == "mysql":
        from .run import ensure_mysql_database

        ensure_mysql_database(os.environ.get("AQ_BENCH_MYSQL_NAME", "bench_aq"))
    from . import tasks  # sets Django up on the chosen database

    result = measure(tasks, args.activities, args.inboxes)
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def measure(tasks, activities: int, inboxes: int) -> dict:
    from django.db import connection, transaction

    from activity_queue import enqueue
    from activity_queue.models import ScheduledActivity

    from .payload import activity

    tasks.reset()
    _vacuum(connection)
    empty = _sizes(connection)
    targets = [f"https://instance-{j}.example/users/member{j}/inbox" for j in range(inboxes)]
    t0 = time.perf_counter()
    for i in range(activities):
        with transaction.atomic():
            enqueue(activity(i, "backlog"), to=targets)
    seconds = time.perf_counter() - t0
    queued = ScheduledActivity.objects.count()
    tasks.analyze()
    _vacuum(connection)
    sizes = {name: size - empty.get(name, 0) for name, size in _sizes(connection).items()}
    total = sum(sizes.values())
    return {
        "db": connection.vendor, "activities": activities, "inboxes": inboxes,
        "queued": queued, "bytes_total": total,
        "bytes_per_delivery": round(total / max(1, queued), 1),
        "enqueue_seconds": round(seconds, 2),
        "enqueue_ms_per_activity": round(1000 * seconds / max(1, activities), 2),
        "by_relation": dict(sorted(sizes.items(), key=lambda kv: -kv[1])),
    }


def _vacuum(connection) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        elif connection.vendor == "mysql":
            pass  # tasks.analyze() ran ANALYZE TABLE: information_schema has fresh page counts
        else:
            connection.ensure_connection()
            raw = connection.connection
            autocommit = raw.autocommit
            raw.autocommit = True
            try:
                raw.execute("VACUUM")
            finally:
                raw.autocommit = autocommit


def _sizes(connection) -> dict[str, int]:
    """Bytes of each table and index of the app (``activity_queue_*``)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name, SUM(pgsize) FROM dbstat WHERE name IN (SELECT name "
                           "FROM sqlite_master WHERE tbl_name LIKE 'activity_queue%') "
                           "GROUP BY name")
        elif connection.vendor == "mysql":
            # InnoDB's own page counts: data (the clustered index, rows included) and the
            # secondary indexes, of each table.
            cursor.execute(
                "SELECT table_name, data_length + index_length FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name LIKE 'activity_queue%%'")
        else:
            cursor.execute(
                "SELECT c.relname, pg_relation_size(c.oid) + COALESCE(pg_total_relation_size("
                "NULLIF(c.reltoastrelid, 0)), 0) FROM pg_class c "
                "LEFT JOIN pg_index i ON i.indexrelid = c.oid "
                "LEFT JOIN pg_class t ON t.oid = i.indrelid "
                "WHERE c.relnamespace = current_schema()::regnamespace "
                "AND c.relkind IN ('r', 'i') "
                "AND COALESCE(t.relname, c.relname) LIKE 'activity_queue%%'")
        return {name: int(size or 0) for name, size in cursor.fetchall()}


if __name__ == "__main__":
    sys.exit(main())
