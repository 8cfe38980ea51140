"""The public way in: ``enqueue(activity, to=inboxes)``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from datetime import timedelta
from functools import lru_cache, partial
from typing import Any

from django.conf import settings
from django.db import router, transaction
from django.utils import timezone

from .. import lifecycle
from ..exceptions import InvalidActivity, UnsafeDestination, WrongType
from ..lifecycle import State
from ..models import Activity, Payload, ScheduledActivity
from ..net.addresses import check_inbox, origin
from ..payloads import MAX_DEPTH, dumped_problem
from . import backends, hosts
from . import drops as dropping
from . import queue as store

MAX_TYPE_LENGTH = Payload._meta.get_field("activity_type").max_length
MAX_INBOX_LENGTH = ScheduledActivity._meta.get_field("inbox").max_length
MAX_HOST_LENGTH = ScheduledActivity._meta.get_field("host").max_length
BINARY = (bytes, bytearray, memoryview)


def new_activity_id() -> str:
    """A stable id for an activity that has none, under ``SITE_URL`` when it is set."""
    site = (getattr(settings, "SITE_URL", "") or "").rstrip("/")
    token = uuid.uuid4()
    return f"{site}/activities/{token}" if site else f"urn:uuid:{token}"


def object_id_of(activity: dict[str, Any]) -> str:
    obj = activity.get("object")
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        value = obj.get("@id") or obj.get("id") or ""
        return value if isinstance(value, str) else ""
    return ""


def _destinations(to: str | Iterable[str]) -> list[tuple[str, str]]:
    """``(inbox, host)`` for each distinct inbox in ``to``, in order, or an error naming the
    bad one."""
    if isinstance(to, str):
        to = [to]
    elif isinstance(to, BINARY):
        raise WrongType(f"'to' must be an inbox URL string or an iterable of them, not "
                        f"{type(to).__name__}; decode it first")
    elif isinstance(to, Mapping):
        raise WrongType(f"'to' must be an inbox URL string or an iterable of them, not a "
                        f"{type(to).__name__}: its keys would be taken for inboxes")
    try:
        inboxes = list(dict.fromkeys(to))
    except TypeError:
        raise WrongType(
            f"'to' must be an inbox URL or an iterable of them, not {to!r}"
        ) from None
    for inbox in inboxes:
        if not isinstance(inbox, str):
            hint = "; decode it first" if isinstance(inbox, BINARY) else ""
            raise WrongType(f"an inbox must be a URL string, not {type(inbox).__name__} "
                            f"({inbox!r:.80}){hint}")
    return [(inbox, _host_of_inbox(inbox)) for inbox in inboxes]


@lru_cache(maxsize=4096)
def _host_of_inbox(inbox: str) -> str:
    """The inbox's origin once it passed the checks: a site sends to the same followers
    over and over, and parsing each URL again was a tenth of ``enqueue()``'s own time."""
    if len(inbox) > MAX_INBOX_LENGTH:
        raise InvalidActivity(f"inbox URL is longer than {MAX_INBOX_LENGTH} characters")
    try:
        check_inbox(inbox)
    except UnsafeDestination as exc:
        raise InvalidActivity(str(exc)) from None
    host = origin(inbox)
    # Caught here, not by the database: PostgreSQL would abort the caller's transaction.
    if len(host) > MAX_HOST_LENGTH:
        raise InvalidActivity(f"inbox {inbox[:60]!r}…: its host is longer than "
                              f"{MAX_HOST_LENGTH} characters")
    return host


CONTAINERS = (dict, list, tuple)


def _too_deep(value: Any, limit: int) -> bool:
    """Whether objects/arrays nest more than ``limit`` levels, without recursing (cycles too)."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, CONTAINERS):
                stack.append((child, level + 1))
    return False


def enqueue(activity: dict[str, Any], to: str | Iterable[str], *, delay: float = 0,
            using: str | None = None) -> list[ScheduledActivity]:
    """Schedule ``activity`` for delivery to each inbox in ``to``.

    The rows are written in the caller's transaction, in one statement: if
    that transaction rolls back, nothing is sent; once it commits, the worker
    is woken. An ``id`` is added when the activity has none, so that every
    copy carries the same stable id and receivers can drop duplicates.
    Redundant copies (see :mod:`activity_queue.sending.redundancy`) are dropped and
    logged instead of queued, and copies for an unavailable host are logged as failed
    at once, so the result may be shorter than ``to``.
    """
    if not isinstance(activity, dict):
        raise WrongType(f"an activity must be a dict, not {type(activity).__name__}")
    kind = activity.get("type")
    if not isinstance(kind, str) or not kind:
        raise InvalidActivity("an activity needs a 'type' string (Create, Update, Delete…)")
    if len(kind) > MAX_TYPE_LENGTH:
        raise InvalidActivity(f"activity type {kind[:40]!r}… is longer than {MAX_TYPE_LENGTH}")
    if not isinstance(delay, int | float) or delay < 0:
        raise InvalidActivity(f"delay must be a number of seconds >= 0, not {delay!r}")
    if "id" in activity and not isinstance(activity["id"], str):
        raise WrongType(f"an activity's 'id' must be a string, not "
                        f"{type(activity['id']).__name__}; leave it out to have one made")
    destinations = _destinations(to)
    if not destinations:
        return []
    if _too_deep(activity, MAX_DEPTH):
        raise InvalidActivity(f"activity is nested more than {MAX_DEPTH} levels deep")
    if not activity.get("id"):
        activity = {**activity, "id": new_activity_id()}
    try:
        payload = json.dumps(activity, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidActivity(f"activity is not JSON-serialisable: {exc}") from None
    # Refused here on every database, not by PostgreSQL, which would abort the caller's
    # transaction (and SQLite would store what a PostgreSQL receiver cannot).
    problem = dumped_problem(payload)
    if problem:
        raise InvalidActivity(f"a string in the activity {problem}, which PostgreSQL's jsonb "
                              "cannot store; remove it or replace it before enqueueing")
    now = timezone.now()
    due = now + timedelta(seconds=delay) if delay else now
    object_id = object_id_of(activity)[:2000]
    using = using or router.db_for_write(ScheduledActivity)
    stored = Payload(activity_id=activity["id"][:500], activity_type=kind, object_id=object_id,
                     body=payload, created_at=now)
    stored.document = activity
    # Outside a transaction, one of our own keeps the rows and the drops they cause together.
    with transaction.atomic(using=using) if transaction.get_autocommit(using) else nullcontext():
        gone = hosts.unavailable([host for _, host in destinations], using)
        refused = [d for d in destinations if d[1] in gone]
        destinations = [d for d in destinations if d[1] not in gone]
        if destinations:
            rows = store.insert(using, stored, due, destinations)
        else:
            rows = []
            stored.save(using=using)
        if refused:
            _fail_unavailable(using, stored, refused, gone)
        lifecycle.move(lifecycle.NEW, State.PENDING, len(rows))
        rows = dropping.on_enqueue(rows, using=using, now=now)
    if rows:
        transaction.on_commit(partial(backends.wake, using), using=using)
    return rows


def _fail_unavailable(using: str, payload: Payload, destinations: list[tuple[str, str]],
                      reasons: dict[str, str]) -> None:
    """Log copies for unavailable hosts as failed, with no attempt: nothing is queued."""
    lifecycle.move(lifecycle.NEW, State.FAILED, len(destinations))
    Activity.objects.using(using).bulk_create([
        Activity(activity_id=payload.activity_id, activity_type=payload.activity_type,
                 object_id=payload.object_id, payload=payload, created_at=payload.created_at,
                 inbox=inbox, host=host, error=reasons[host], attempts=0,
                 direction=Activity.Direction.OUTBOUND, status=State.FAILED,
                 resolved_at=payload.created_at)
        for inbox, host in destinations
    ])
