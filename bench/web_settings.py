"""Django settings of the web-load scenario (``bench/web_load.py``): a small site on SQLite.

Everything that varies comes from the environment the scenario sets:
``AQ_WEB_DB`` (the database file), ``AQ_WEB_SQLITE_OPTIONS`` (the database's
``OPTIONS``, JSON) and ``AQ_WEB_AUTOSTART`` (``1``: the in-process worker).
Each log record starts with ``LOG`` so that the scenario can count the
records (with their tracebacks) that mention a lock.
"""

import json
import os

SECRET_KEY = "bench-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["127.0.0.1"]
SITE_URL = "http://127.0.0.1"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "activity_queue"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.web_urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("AQ_WEB_DB", "web.sqlite3"),
        "OPTIONS": json.loads(os.environ.get("AQ_WEB_SQLITE_OPTIONS", "{}")),
    }
}
ACTIVITY_QUEUE = {
    "ALLOW_PRIVATE_ADDRESSES": True,
    "AUTOSTART": os.environ.get("AQ_WEB_AUTOSTART") == "1",
    "POLL_INTERVAL": 0.2,
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"marked": {"format": "LOG %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "marked"}},
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
        "activity_queue": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}
