"""Django settings of the benchmark: one database, chosen by the orchestrator.

``AQ_BENCH_DB=sqlite`` (a file database with WAL and IMMEDIATE transactions,
as in example_project), ``postgres`` (``AQ_BENCH_PG_NAME``, default
``bench_aq``, on the local server; ``AQ_BENCH_PG_PREPARE=1`` turns on prepared
statements) or ``mysql`` (``AQ_BENCH_MYSQL_NAME``, default ``bench_aq``, on the
local MariaDB or MySQL, root without a password unless ``AQ_BENCH_MYSQL_USER`` and
``AQ_BENCH_MYSQL_PASSWORD`` say otherwise). DEBUG stays off: with it on, Django
keeps every query in memory and the memory figure would measure that.
"""

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "bench-only"
DEBUG = False
USE_TZ = True
SITE_URL = "http://bench.example"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "activity_queue"]

if os.environ.get("AQ_BENCH_DB", "sqlite") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("AQ_BENCH_PG_NAME", "bench_aq"),
            "USER": os.environ.get("AQ_BENCH_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("AQ_BENCH_PG_PASSWORD", ""),
            "HOST": os.environ.get("AQ_BENCH_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("AQ_BENCH_PG_PORT", "5432"),
            # Django's default (0) closes the connection whenever the worker goes idle.
            "CONN_MAX_AGE": float(os.environ.get("AQ_BENCH_CONN_MAX_AGE", "0")),
        }
    }
    if os.environ.get("AQ_BENCH_PG_PREPARE"):
        # Server-side parameters and psycopg's prepared statements (Django's default: off,
        # for transaction-pooling proxies): a statement is planned once per connection.
        DATABASES["default"]["OPTIONS"] = {"server_side_binding": True,
                                           "prepare_threshold": 5}
elif os.environ.get("AQ_BENCH_DB") == "mysql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": os.environ.get("AQ_BENCH_MYSQL_NAME", "bench_aq"),
            "USER": os.environ.get("AQ_BENCH_MYSQL_USER", "root"),
            "PASSWORD": os.environ.get("AQ_BENCH_MYSQL_PASSWORD", ""),
            "HOST": os.environ.get("AQ_BENCH_MYSQL_HOST", "127.0.0.1"),
            "PORT": os.environ.get("AQ_BENCH_MYSQL_PORT", "3306"),
            "CONN_MAX_AGE": float(os.environ.get("AQ_BENCH_CONN_MAX_AGE", "0")),
            "OPTIONS": {"charset": "utf8mb4"},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("AQ_BENCH_SQLITE", str(ROOT / "var" / "bench.sqlite3")),
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20,
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
        }
    }

ACTIVITY_QUEUE = {
    # The receivers are on 127.0.0.1; the worker is started by the benchmark itself.
    "ALLOW_PRIVATE_ADDRESSES": True,
    "AUTOSTART": False,
    # Values of a run (bench/faults.py), as JSON.
    **json.loads(os.environ.get("AQ_BENCH_QUEUE", "{}")),
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"activity_queue": {"handlers": ["console"], "level": "ERROR"}},
}
