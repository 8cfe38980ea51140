"""The Django Tasks backend: deliveries run as a task of Django's Tasks framework.

For sites whose background work already runs that way (``django.tasks`` on
Django 6; the ``django-tasks`` backport on Django 5.2), with whatever task
backend they configured in ``TASKS`` (``django-tasks-db``'s ``db_worker``,
``django-tasks-rq``, …). The task ``deliver_due`` runs :class:`~.runs.TaskRuns`,
as the Celery backend does; marks kept in the site's shared cache keep a
burst of commits from becoming a burst of tasks.
"""

from __future__ import annotations

import atexit
import logging
from datetime import timedelta
from importlib.util import find_spec

from django.core.cache import caches
from django.utils import timezone

from .marks import Marks, marks_in_cache
from .runs import TaskRuns, namespace

if find_spec("django.tasks") is not None:
    from django.tasks import task
else:
    from django_tasks import task

logger = logging.getLogger(__name__)


class DjangoTaskRuns(TaskRuns):
    log = logger

    def marks(self, using: str) -> Marks:
        return marks_in_cache(caches["default"], namespace(using))

    def send(self, countdown: float | None = None) -> None:
        if countdown is None:
            deliver_due.enqueue()
        else:
            deliver_due.using(
                run_after=timezone.now() + timedelta(seconds=countdown)).enqueue()

    def defers(self) -> bool:
        return deliver_due.get_backend().supports_defer


runs = DjangoTaskRuns()


@task()
def deliver_due() -> None:
    """Deliver what is due with this process's worker, then set a timer for what is due later."""
    runs.run()


def wake(using: str) -> None:
    runs.wake(using)


# A task worker (``db_worker``) exits between tasks: hand back what this process holds.
atexit.register(runs.shut_down)
