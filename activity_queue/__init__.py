"""activity_queue: persisted, transactional delivery of ActivityStreams activities."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import ScheduledActivity

__all__ = ["enqueue", "federate"]


def enqueue(activity: dict[str, Any], to: str | Iterable[str],
            **options: Any) -> list[ScheduledActivity]:
    """See :func:`activity_queue.sending.outbox.enqueue`; importable before apps are ready."""
    from .sending.outbox import enqueue as _enqueue

    return _enqueue(activity, to, **options)


def federate(model: Any, *, rdf_type: str, links: Iterable[str] | None = None) -> Any:
    """See :func:`activity_queue.federation.registry.federate`: make ``model`` send backlinks."""
    from .federation.registry import federate as _federate

    return _federate(model, rdf_type=rdf_type, links=links)
