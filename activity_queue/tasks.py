"""Where task runners look for tasks: Celery's ``app.autodiscover_tasks()`` imports this
module, and so do other runners' ``autodiscover_modules("tasks")``.

It registers the Celery backend's ``activity_queue.deliver_due`` when Celery is installed,
and imports cleanly when it is not (docs/deployment.md).
"""

from importlib.util import find_spec

__all__: list[str] = []

if find_spec("celery") is not None:
    from .sending.backends.celery import deliver_due

    __all__ = ["deliver_due"]
