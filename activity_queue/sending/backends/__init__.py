"""How a committed enqueue reaches a worker.

``thread`` (the default) wakes, or lazily starts, the in-process worker;
``celery`` (optional, ``pip install activity_queue[celery]``) sends a Celery
task through the site's broker; ``tasks`` enqueues a task of Django's Tasks
framework. Each is imported only when chosen.
"""

from __future__ import annotations

from importlib import import_module

BACKENDS = {
    "thread": "activity_queue.sending.backends.thread",
    "celery": "activity_queue.sending.backends.celery",
    "tasks": "activity_queue.sending.backends.tasks",
}


def wake(using: str) -> None:
    """Tell whoever delivers that new rows were committed on database ``using``."""
    from ...conf import get_config

    import_module(BACKENDS.get(get_config().BACKEND, BACKENDS["thread"])).wake(using)
