"""Settings for subprocesses the tests start (workers, runserver).

They use the database the test process is using (its test database), named
in ``AQ_PROC_DB_NAME``, with the ``OPTIONS`` in ``AQ_PROC_DB_OPTIONS`` (JSON) when
set, the ``CACHES`` in ``AQ_PROC_CACHES`` (JSON) when set, and ``ACTIVITY_QUEUE``
values from ``AQ_PROC_QUEUE`` (JSON) merged over the test settings. The engine
follows ``AQ_TEST_DB`` as in :mod:`tests.settings`.
"""

import json
import os

from .settings import *  # noqa: F403
from .settings import ACTIVITY_QUEUE, DATABASES

DATABASES["default"]["NAME"] = os.environ["AQ_PROC_DB_NAME"]
if "AQ_PROC_DB_OPTIONS" in os.environ:
    DATABASES["default"]["OPTIONS"] = json.loads(os.environ["AQ_PROC_DB_OPTIONS"])
if "AQ_PROC_CACHES" in os.environ:
    CACHES = json.loads(os.environ["AQ_PROC_CACHES"])
ACTIVITY_QUEUE = {"AUTOSTART": False, **ACTIVITY_QUEUE,
                  **json.loads(os.environ.get("AQ_PROC_QUEUE", "{}"))}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"activity_queue": {"handlers": ["stderr"], "level": "INFO"},
                "django.request": {"handlers": ["stderr"], "level": "ERROR"}},
}
