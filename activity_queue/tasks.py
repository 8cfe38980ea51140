"""Celery's ``app.autodiscover_tasks()`` imports this module: it registers the
``activity_queue.deliver_due`` task of the Celery backend (docs/deployment.md)."""

from .sending.backends.celery import deliver_due

__all__ = ["deliver_due"]
