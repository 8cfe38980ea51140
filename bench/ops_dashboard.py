"""How long the operator pages take with a large log (not a test: prints timings).

    python bench/ops_dashboard.py [--rows 1000000] [--postgres]

Fills a scratch database (SQLite file in /tmp, or the PostgreSQL database
``aq_ops_bench`` on the local server) with ``--rows`` log rows spread over 30
days, 3 % failures over 200 hosts, then times the dashboard's queries, the
dashboard page, the log's change list (plain and filtered) and
``activity_status``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
parser = argparse.ArgumentParser()
parser.add_argument("--rows", type=int, default=1_000_000)
parser.add_argument("--postgres", action="store_true")
parser.add_argument("--keep", action="store_true", help="reuse a filled database")
options = parser.parse_args()
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
if options.postgres:
    os.environ["AQ_TEST_DB"] = "postgres"
    os.environ["AQ_PG_NAME"] = "aq_ops_bench"

import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not options.postgres:
    settings.DATABASES["default"]["NAME"] = "/tmp/aq_ops_bench.sqlite3"
django.setup()

from io import StringIO  # noqa: E402

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from activity_queue.models import Activity  # noqa: E402
from activity_queue.operations import stats as health  # noqa: E402


def ensure_database() -> None:
    if not options.postgres:
        return
    import psycopg

    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'aq_ops_bench'").fetchone()
        if not exists:
            conn.execute("CREATE DATABASE aq_ops_bench")


def fill(rows: int) -> None:
    """One INSERT … SELECT over a generated series: the database makes the rows itself."""
    table = Activity._meta.db_table
    span = 30 * 86400
    columns = ("activity_id, activity_type, object_id, inbox, host, payload, direction, status, "
               "status_code, error, response_excerpt, attempts, created_at, resolved_at, "
               "duration_ms")
    host = "'https://h' || (i % 200) || '.example'"
    failed = "i % 33 = 0"
    if options.postgres:
        at = f"now() - (i * {span}.0 / {rows}) * interval '1 second'"
        source = f"generate_series(0, {rows - 1}) AS i"
        prefix = ""
    else:
        at = f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || (i * {span}.0 / {rows}) || ' seconds')"
        source = "seq"
        prefix = f"WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq " \
                 f"WHERE i < {rows - 1}) "
    sql = (f"{prefix}INSERT INTO {table} ({columns}) SELECT "
           f"'https://site.example/activities/' || i, 'Update', "
           f"'https://site.example/o/' || i || '/', {host} || '/inbox/', {host}, "
           f"'{{\"type\": \"Update\"}}', 'out', "
           f"CASE WHEN {failed} THEN 'failed' ELSE 'sent' END, "
           f"CASE WHEN {failed} THEN 503 ELSE 202 END, "
           f"CASE WHEN {failed} THEN 'HTTP 503' ELSE '' END, '', 1, {at}, {at}, 3.0 "
           f"FROM {source}")
    with connection.cursor() as cursor:
        cursor.execute(sql)
        if options.postgres:
            cursor.execute(f"VACUUM ANALYZE {table}")


def timed(label: str, fn, repeat: int = 3) -> None:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    print(f"{label:<44} {best * 1000:8.1f} ms")


def main() -> None:
    ensure_database()
    if options.postgres:
        connection.ensure_connection()
        connection.connection.autocommit = True
    if not options.keep:
        if not options.postgres:
            Path("/tmp/aq_ops_bench.sqlite3").unlink(missing_ok=True)
        call_command("migrate", verbosity=0)
        Activity.objects.all().delete()
        start = time.perf_counter()
        fill(options.rows)
        print(f"filled {options.rows} rows in {time.perf_counter() - start:.0f} s")
    print(f"{connection.vendor}: {Activity.objects.count()} log rows")
    from django.contrib.auth.models import User

    setup_test_environment()
    User.objects.filter(username="bench").delete()
    User.objects.create_superuser("bench", "b@example.org", "x")
    client = Client()
    client.login(username="bench", password="x")
    now = datetime.now(UTC)
    timed("health.hourly_outcomes(24)", lambda: health.hourly_outcomes(24))
    timed("health.failing_hosts(24 h)", lambda: health.failing_hosts(now - timedelta(hours=24)))
    timed("health.queue_stats()", health.queue_stats)
    timed("dropped count (24 h)", lambda: health.count_since("dropped", now - timedelta(hours=24)))
    for label, url in (("GET dashboard", "/admin/activity_queue/activity/dashboard/"),
                       ("GET log change list", "/admin/activity_queue/activity/"),
                       ("GET log, failed only", "/admin/activity_queue/activity/"
                                                "?status__exact=failed"),
                       ("GET log, one host", "/admin/activity_queue/activity/"
                                             "?host=https%3A%2F%2Fh7.example")):
        timed(label, lambda url=url: client.get(url).status_code == 200 or sys.exit(url))
    timed("activity_status --json", lambda: call_command("activity_status", "--json",
                                                         stdout=StringIO()))


main()
