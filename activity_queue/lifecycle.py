"""The life of a delivery, declared once: its states and every move between them.

A scheduled row is *pending* until a worker leases it; a leased row ends as
*sent* or *failed* (an ``Activity`` log row is written and the scheduled row
deleted in one transaction), goes back to wait as *retrying* after a failed
attempt, or as *pending* when it was handed back without an attempt (its host
paused, the worker stopping, an older activity about its object going first).
Rows can also leave the queue as *dropped* (redundant), *discarded* (by an
operator), or *failed* without an attempt when their host is unavailable. The
inbox logs what it accepts as *received*.

Every piece of code that changes a state says so through :func:`move`, so a
move missing from :data:`TRANSITIONS` fails loudly, in the tests first. A
lease that runs out (its worker died) is not a move: the row is simply
claimable again, as *retrying*, since the claim counted an attempt.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import models


class State(models.TextChoices):
    PENDING = "pending", "pending"
    LEASED = "leased", "leased (in flight)"
    RETRYING = "retrying", "retrying"
    SENT = "sent", "sent"
    FAILED = "failed", "failed"
    RECEIVED = "received", "received"
    DROPPED = "dropped", "dropped as redundant"
    DISCARDED = "discarded", "discarded"


#: The start of every move that makes a new row.
NEW = None

#: Every allowed move, and what makes it.
TRANSITIONS: dict[tuple[State | None, State], str] = {
    (NEW, State.PENDING): "enqueue(); a replay of a failed or discarded activity",
    (NEW, State.RECEIVED): "the inbox accepts an activity",
    (NEW, State.FAILED): "the inbox of a backlink's target cannot be discovered; enqueue() "
                         "to an unavailable host",
    (NEW, State.DROPPED): "the object is deleted before its target's inbox is known",
    (State.PENDING, State.LEASED): "a worker claims the row",
    (State.RETRYING, State.LEASED): "a worker claims the row",
    (State.LEASED, State.SENT): "the inbox answers 2xx",
    (State.LEASED, State.RETRYING): "a retryable failure (408, 429, 5xx, timeout, network)",
    (State.LEASED, State.FAILED): "a permanent failure, or the last attempt failed",
    (State.PENDING, State.FAILED): "its host became unavailable",
    (State.RETRYING, State.FAILED): "its host became unavailable",
    (State.LEASED, State.PENDING): "handed back unattempted: host paused, worker stopping, "
                                   "claimed beyond the host's room, waiting for an older "
                                   "activity about its object",
    (State.LEASED, State.DROPPED): "redundant, found once claimed",
    (State.PENDING, State.DROPPED): "redundant with a newer activity or a delivered one",
    (State.RETRYING, State.DROPPED): "redundant with a newer activity or a delivered one",
    (State.PENDING, State.DISCARDED): "an operator discards it",
    (State.RETRYING, State.DISCARDED): "an operator discards it",
}

#: The states an ``Activity`` log row can hold.
FINAL_STATES = (State.SENT, State.FAILED, State.RECEIVED, State.DROPPED, State.DISCARDED)


class IllegalTransition(RuntimeError):
    """Code tried a move :data:`TRANSITIONS` does not allow: a bug, never bad input."""


#: Called with ``(src, dst, count)`` after each allowed move (tests watch the moves made).
watchers: list[Callable[[State | None, State, int], None]] = []


def move(src: State | None, dst: State, count: int = 1) -> None:
    """Declare that ``count`` rows move from ``src`` to ``dst``; raise if not allowed."""
    if (src, dst) not in TRANSITIONS:
        raise IllegalTransition(f"a delivery cannot go from {src or 'nothing'} to {dst}")
    if count <= 0:
        return
    for watch in watchers:
        watch(src, dst, count)


def waiting_state(attempts: int) -> State:
    """The state of a row nobody holds: *retrying* once an attempt failed."""
    return State.RETRYING if attempts else State.PENDING
