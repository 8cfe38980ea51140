"""Work the worker does beside deliveries, registered by the parts of the app that have some.

The sending side knows nothing of federation; federation registers its inbox
discovery here from ``AppConfig.ready()``, and every worker (the in-process
thread, ``activity_worker``, a Celery task) runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Chore:
    #: Called at every step of a running worker: cheap, and anything slow goes to a
    #: thread of the chore's own, so that deliveries never wait for it.
    poll: Callable[[], object]
    #: Called by ``Worker.run_once()``: what is due, done now in the caller's thread.
    run: Callable[[], object]


_chores: dict[str, Chore] = {}


def register(name: str, chore: Chore) -> None:
    """Add ``chore`` under ``name`` (registering a name again replaces it)."""
    _chores[name] = chore


def registered() -> list[Chore]:
    return list(_chores.values())
