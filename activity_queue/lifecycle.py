"""The life of a delivery, declared once.

A scheduled row is *pending* until a worker leases it; a leased row ends as
*sent* or *failed* (an ``Activity`` log row is written and the scheduled row
deleted in one transaction), or goes back to pending as *retrying* with a
later due time. Rows can also leave the queue as *dropped* (redundant) or
*discarded* (by an operator). The worker, the admin and the status command all
read these names from here.
"""

from __future__ import annotations

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


#: Which state may follow which. Resolution states are final.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.LEASED, State.DROPPED, State.DISCARDED}),
    State.RETRYING: frozenset({State.LEASED, State.DROPPED, State.DISCARDED}),
    State.LEASED: frozenset({State.SENT, State.FAILED, State.RETRYING, State.PENDING}),
    State.SENT: frozenset(),
    State.FAILED: frozenset(),
    State.RECEIVED: frozenset(),
    State.DROPPED: frozenset(),
    State.DISCARDED: frozenset(),
}

#: The states an ``Activity`` log row can hold.
FINAL_STATES = (State.SENT, State.FAILED, State.RECEIVED, State.DROPPED, State.DISCARDED)


def can_transition(src: State, dst: State) -> bool:
    return dst in TRANSITIONS[src]
