"""Plain values that cross between the database side and the network side."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..lifecycle import State
from ..net.signing import Signer


@dataclass(slots=True)
class Job:
    """A claimed row, with only what a delivery needs."""

    id: int
    inbox: str
    host: str
    #: This attempt's number: counted when the row was claimed.
    attempts: int
    #: Written while an older activity about the object was queued for the inbox or
    #: delivered there: the redundancy and order checks must look at it.
    has_predecessor: bool
    activity_type: str
    activity_id: str
    object_id: str
    #: The payload's JSON text, shared by the jobs of one fan-out.
    body: bytes
    #: When the activity was enqueued (read for the log rows on PostgreSQL).
    created_at: datetime | None = None
    #: Signs this delivery instead of the worker's site key: the key of the activity's
    #: actor (:mod:`activity_queue.sending.actor_keys`), with its ``private_key`` and
    #: ``key_id``.
    signer: Signer | None = None


@dataclass(slots=True)
class Outcome:
    job: Job
    #: Where the row goes: SENT, FAILED, RETRYING, or PENDING (handed back unattempted).
    state: State
    status_code: int | None = None
    error: str = ""
    excerpt: str = ""
    duration_ms: float | None = None
    #: When to try again (RETRYING, PENDING); None means "now".
    retry_at: datetime | None = None
    #: The server's Retry-After, in seconds, when it sent one.
    retry_after: float | None = None
    #: The failure says the host is unwell (timeout, refused, 5xx…): counts for its circuit.
    host_fault: bool = False
    #: The signature scheme the host accepted after refusing the other (a double knock),
    #: to be remembered in its health row.
    signature_scheme: str | None = None
