"""A small Celery app, as a site would write one, on the local Redis.

``celery -A tests.celery_app worker`` runs it in a subprocess (with
``tests.proc_settings``); the test process imports it so that the backend's
wake-ups go through the same broker and queue. ``AQ_TEST_REDIS`` names the
Redis database, ``AQ_CELERY_QUEUE`` the queue (one per test run), and
``AQ_BEAT_EVERY`` the period of the beat entry the README documents.
"""

import os

from celery import Celery

REDIS_URL = os.environ.get("AQ_TEST_REDIS", "redis://127.0.0.1:6379/7")
QUEUE = os.environ.setdefault("AQ_CELERY_QUEUE", f"aq-tests-{os.getpid()}")
BEAT_EVERY = float(os.environ.get("AQ_BEAT_EVERY", "0.5"))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.proc_settings")

app = Celery("aq_tests", broker=REDIS_URL)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    beat_schedule={
        "activity-queue": {"task": "activity_queue.deliver_due", "schedule": BEAT_EVERY,
                           "options": {"expires": BEAT_EVERY}},
    },
)
app.autodiscover_tasks(["activity_queue"])
