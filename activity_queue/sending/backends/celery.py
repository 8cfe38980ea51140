"""The Celery backend: deliveries run in the site's Celery workers, woken through its broker.

The task ``activity_queue.deliver_due`` runs :class:`~.runs.TaskRuns` (one
worker per Celery worker process, until nothing is due, then a timer for what
is due later). With a Redis broker, marks in that Redis keep a burst of commits
from becoming a burst of messages; the beat entry is the net for lost messages.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery import signals as celery_signals

from .marks import Marks, marks_for
from .runs import TaskRuns, namespace

logger = logging.getLogger(__name__)

TASK_NAME = "activity_queue.deliver_due"
#: Publishing a wake-up retries this little: the request that committed is waiting.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                 "interval_max": 0.5}


class CeleryRuns(TaskRuns):
    log = logger

    def marks(self, using: str) -> Marks:
        """In the broker's Redis when the broker is Redis, else in this process."""
        app = deliver_due.app
        url = app.conf.broker_write_url or app.conf.broker_url
        return marks_for(url if isinstance(url, str) else None, namespace(using))

    def send(self, countdown: float | None = None) -> None:
        if countdown is None:
            deliver_due.apply_async(retry=True, retry_policy=PUBLISH_RETRY)
        else:
            deliver_due.apply_async(countdown=countdown)

    def defers(self) -> bool:
        return not deliver_due.app.conf.task_always_eager


runs = CeleryRuns()


@shared_task(name=TASK_NAME, ignore_result=True)
def deliver_due() -> None:
    """Deliver what is due with this process's worker, then set a timer for what is due later."""
    runs.run()


def wake(using: str) -> None:
    runs.wake(using)


@celery_signals.worker_shutting_down.connect
def _stop_claiming(**kwargs) -> None:
    runs.stop_claiming()


@celery_signals.worker_process_shutdown.connect
@celery_signals.worker_shutdown.connect
def _shut_down(**kwargs) -> None:
    runs.shut_down()
