"""The redundancy rules applied to the queue: when enqueuing, and after claiming.

After claiming, it also keeps the activities about one object to one inbox
in order (see :func:`on_claim`).

Only rows written with ``has_predecessor`` (see :func:`store.insert
<activity_queue.sending.queue.insert>`) concern them: a row written while nothing
else about its object was queued for its inbox or delivered there is neither
redundant nor behind another one, and activities written later about that
object are flagged. For the (inbox, object) pairs concerned, one query looks
up the queued rows and the last activity successfully delivered (an
``Activity`` row with status *sent*, so the rule survives restarts);
:func:`redundancy.decide` judges; dropped activities become ``Activity`` rows
with status *dropped* (and the reason in ``error``), and
``signals.activity_dropped`` is sent once the transaction commits. Rows
another worker holds in flight are never touched.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import connections, transaction
from django.db.models import Q, prefetch_related_objects
from django.utils import timezone

from .. import lifecycle, signals
from ..conf import get_config
from ..lifecycle import State
from ..models import Activity, Payload, ScheduledActivity, pair_key
from .jobs import Job
from .redundancy import Drop, Entry, decide, fingerprint

logger = logging.getLogger(__name__)

#: Queued rows looked at, at most, per lookup; beyond that the filter stays out of the way.
ROW_CAP = 200
#: (inbox, object) pairs per lookup statement.
PAIRS_PER_QUERY = 100
#: Seconds a job waits before it is looked at again while an older one of its group is queued.
ORDER_WAIT = 0.5

Pair = tuple[str, str]


@dataclass(slots=True)
class Queued:
    id: int
    type: str
    payload: dict[str, Any]
    #: The worker holding it in flight, or "" when nobody does.
    holder: str


def _payload(value: Any) -> dict[str, Any]:
    if isinstance(value, str | bytes):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def lookup(using: str, pairs: Sequence[Pair], now: datetime, cap: int = ROW_CAP
           ) -> tuple[dict[Pair, list[Queued]], dict[Pair, str]] | None:
    """Queued rows and the fingerprint of the last delivered activity, per pair.

    One statement, over exactly these pairs (each an index probe); None when
    more than ``cap`` rows are queued for them.
    """
    connection = connections[using]
    pg = connection.vendor == "postgresql"
    sched = ScheduledActivity._meta.db_table
    payloads = Payload._meta.db_table
    log = Activity._meta.db_table
    first = ("(CAST(%s AS varchar(2000)), CAST(%s AS varchar(2000)), CAST(%s AS bigint))"
             if pg else "(%s, %s, %s)")
    values = "VALUES " + ", ".join([first] + ["(%s, %s, %s)"] * (len(pairs) - 1))
    if connection.vendor == "mysql":  # MySQL 8 writes a VALUES row as ROW(…)
        values = "SELECT %s, %s, %s" + " UNION ALL SELECT %s, %s, %s" * (len(pairs) - 1)
    # Literal constants, so that the partial index aq_act_delivered applies.
    sql = f"""
        WITH v(inbox, object_id, pair_key) AS ({values})
        SELECT * FROM (
            SELECT 0 AS kind, s.id, s.inbox, m.object_id, m.activity_type, m.body,
                   CASE WHEN s.leased_until IS NULL OR s.leased_until < %s
                        THEN '' ELSE s.leased_by END AS holder
            FROM v JOIN {sched} s ON s.pair_key = v.pair_key AND s.inbox = v.inbox
            JOIN {payloads} m ON m.id = s.payload_id AND m.object_id = v.object_id
            ORDER BY s.id LIMIT %s
        ) p
        UNION ALL
        SELECT 1, a.id, a.inbox, a.object_id, a.activity_type, m.body, ''
        FROM {log} a JOIN {payloads} m ON m.id = a.payload_id WHERE a.id IN (
            SELECT (SELECT b.id FROM {log} b
                    WHERE b.inbox = v.inbox AND b.object_id = v.object_id
                      AND b.direction = '{Activity.Direction.OUTBOUND.value}'
                      AND b.status = '{State.SENT.value}'
                    ORDER BY b.id DESC LIMIT 1)
            FROM v)
    """
    params: list[Any] = [p for inbox, object_id in pairs
                         for p in (inbox, object_id, pair_key(object_id, inbox))]
    params += [connection.ops.adapt_datetimefield_value(now), cap + 1]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    queued: dict[Pair, list[Queued]] = defaultdict(list)
    delivered: dict[Pair, str] = {}
    count = 0
    for kind, row_id, inbox, object_id, kind_name, body, holder in rows:
        pair = (inbox, object_id)
        if kind == 1:
            delivered[pair] = fingerprint(_payload(body))
            continue
        count += 1
        queued[pair].append(Queued(row_id, kind_name, _payload(body), holder or ""))
    if count > cap:
        return None
    return queued, delivered


def _movable(worker_id: str | None, now: datetime) -> Q:
    free = Q(leased_until__isnull=True) | Q(leased_until__lt=now)
    return free | Q(leased_by=worker_id) if worker_id else free


def _delete(using: str, ids: Iterable[int], worker_id: str | None, now: datetime
            ) -> list[ScheduledActivity]:
    """Remove these rows unless someone else holds them; return those removed."""
    ids = list(ids)
    if not ids:
        return []
    held = (ScheduledActivity.objects.using(using).filter(pk__in=ids)
            .filter(_movable(worker_id, now)))
    # Only the queued rows are locked, never their payloads, which the other deliveries
    # of a fan-out share: without FOR UPDATE OF (MariaDB), the payloads are read apart.
    if connections[using].features.has_select_for_update_of:
        rows = list(held.select_for_update(skip_locked=True, of=("self",))
                    .select_related("payload"))
    else:
        rows = list(held.select_for_update(skip_locked=True))
        prefetch_related_objects(rows, "payload")
    if rows:
        ScheduledActivity.objects.using(using).filter(pk__in=[r.pk for r in rows]).delete()
    return rows


def _remove(using: str, drops: dict[Hashable, Drop], types: dict[Hashable, str],
            worker_id: str | None, now: datetime) -> dict[Hashable, ScheduledActivity]:
    """Delete the dropped rows; a Delete dropped with its Create goes only if the Create did.

    Returns what was really dropped.
    """
    def deferred(key: Hashable) -> bool:
        return drops[key].rule == "create-delete" and types[key] == "Delete"

    gone: dict[Hashable, ScheduledActivity] = {}
    for phase in (False, True):
        keys = [k for k in drops if deferred(k) is phase
                and (not phase or drops[k].partner in gone)]
        gone.update((r.pk, r) for r in _delete(using, keys, worker_id, now))
    return gone


def _drop(using: str, decisions: list[tuple[dict[Hashable, Drop], dict[Hashable, str]]],
          worker_id: str | None, now: datetime) -> set[Hashable]:
    """Remove and log what ``decide`` dropped, in one transaction; return the ids gone."""
    gone: set[Hashable] = set()
    with transaction.atomic(using=using):
        dropped: list[tuple[Activity, str, str]] = []
        for drops, types in decisions:
            for key, row in _remove(using, drops, types, worker_id, now).items():
                state = row.state
                lifecycle.move(state, State.DROPPED)
                gone.add(key)
                # A row this worker claimed was not sent: its claim's attempt does not count.
                attempts = row.attempts - (state is State.LEASED)
                dropped.append((_log_row(row, drops[key].reason, attempts, now), row.inbox,
                                drops[key].reason))
        _record(using, dropped)
    return gone


def _record(using: str, dropped: list[tuple[Activity, str, str]]) -> None:
    if not dropped:
        return
    Activity.objects.using(using).bulk_create([a for a, _, _ in dropped])
    for activity, inbox, reason in dropped:
        transaction.on_commit(partial(signals.activity_dropped.send, sender=Activity,
                                      activity=activity.payload.document, inbox=inbox,
                                      reason=reason),
                              using=using)


def _log_row(row: ScheduledActivity, reason: str, attempts: int, now: datetime) -> Activity:
    return Activity(activity_id=row.activity_id, activity_type=row.activity_type,
                    object_id=row.object_id, inbox=row.inbox, host=row.host,
                    payload=row.payload, direction=Activity.Direction.OUTBOUND,
                    status=State.DROPPED, error=reason, attempts=attempts,
                    created_at=row.created_at, resolved_at=now)


def on_enqueue(rows: list[ScheduledActivity], *, using: str, now: datetime
               ) -> list[ScheduledActivity]:
    """The rows just written that stay queued: the rules drop the redundant ones, and the
    older queued rows that these make redundant.

    Only a row written with ``has_predecessor`` can be redundant or make
    another one so; the others cost no query.
    """
    if not get_config().DROP_REDUNDANT:
        return rows
    pairs = list(dict.fromkeys((r.inbox, r.object_id) for r in rows
                               if r.has_predecessor and r.object_id))
    if not pairs:
        return rows
    found = lookup(using, pairs, now)
    if found is None:
        return rows
    queued, delivered = found
    decisions: list[tuple[dict[Hashable, Drop], dict[Hashable, str]]] = []
    in_flight: list[int] = []
    for pair in pairs:
        group = queued.get(pair, [])
        drops = decide([Entry(q.id, q.type, fingerprint(q.payload), q.id, movable=not q.holder)
                        for q in group], delivered.get(pair))
        if drops:
            decisions.append((drops, {q.id: q.type for q in group}))
        in_flight += [q.id for q in group if q.holder and q.id not in drops]
    if in_flight:
        _flag(using, in_flight)
    if not decisions:
        return rows
    gone = _drop(using, decisions, None, now)
    return [r for r in rows if r.pk not in gone]


def on_claim(worker_id: str, jobs: list[Job], using: str) -> tuple[list[Job], int, int]:
    """Drop claimed jobs (and queued rows) that the rules make redundant, and hold back
    jobs that an older activity about the same object to the same inbox must precede.

    Deliveries run concurrently, so two activities about one object could
    arrive in either order (a Remove before its Add leaves the member in
    place); a job therefore waits, unclaimed and without an attempt counted,
    while an older one of its group is queued or in flight. Returns the jobs
    still to deliver, how many activities were dropped and how many held back.
    """
    if not jobs:
        return jobs, 0, 0
    now = timezone.now()
    by_pair: dict[Pair, list[Job]] = defaultdict(list)
    for job in jobs:
        if job.object_id:
            by_pair[(job.inbox, job.object_id)].append(job)
    # A row written alone for its pair, with nothing delivered before, has nothing to
    # wait for and nothing to be compared with; rows written after it are flagged and
    # wait for it. Two unflagged rows of one pair in one claim mean two transactions
    # enqueued them concurrently: those are looked at too.
    pairs = [pair for pair, group in by_pair.items()
             if len(group) > 1 or any(job.has_predecessor for job in group)]
    if not pairs:
        return jobs, 0, 0
    filtering = get_config().DROP_REDUNDANT
    held = {job.id for job in jobs}
    decisions: list[tuple[dict[Hashable, Drop], dict[Hashable, str]]] = []
    later: list[tuple[int, int]] = []  # (job, the older row it waits for)
    for start in range(0, len(pairs), PAIRS_PER_QUERY):
        chunk = pairs[start:start + PAIRS_PER_QUERY]
        found = lookup(using, chunk, now, cap=ROW_CAP + 4 * len(chunk))
        if found is None:
            continue
        queued, delivered = found
        for pair in chunk:
            rows = queued.get(pair, [])
            drops: dict[Hashable, Drop] = {}
            if filtering and (len(rows) > 1 or pair in delivered):
                entries = [Entry(q.id, q.type, fingerprint(q.payload), q.id,
                                 movable=not q.holder or (q.holder == worker_id
                                                          and q.id in held))
                           for q in rows]
                drops = decide(entries, delivered.get(pair))
                if drops:
                    decisions.append((drops, {q.id: q.type for q in rows}))
            survivors = [q.id for q in rows if q.id not in drops]
            if survivors:
                later += [(j.id, survivors[0]) for j in by_pair[pair]
                          if j.id != survivors[0] and j.id not in drops]
    gone_ids = _drop(using, decisions, worker_id, now) if decisions else set()
    waiting = {job for job, first in later if first not in gone_ids}
    if waiting:
        _hold_back(using, worker_id, waiting, now + timedelta(seconds=ORDER_WAIT))
    keep = [job for job in jobs if job.id not in gone_ids and job.id not in waiting]
    return keep, len(gone_ids), len(waiting)


def _flag(using: str, ids: list[int]) -> None:
    """Mark older rows that were in flight when a newer row about their object was
    queued, so that their next claim looks at the pair (they were not decided now: a
    row a worker holds cannot be dropped). Unmarked, a retry of a lone ``Create`` could
    be claimed without its pending ``Delete`` being seen."""
    ScheduledActivity.objects.using(using).filter(id__in=ids).update(has_predecessor=True)


def _hold_back(using: str, worker_id: str, ids: set[int], until: datetime) -> None:
    """Give jobs back, due again a little later, with the claim's attempt taken back."""
    connection = connections[using]
    table = ScheduledActivity._meta.db_table
    ids_list = sorted(ids)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET leased_by = '', leased_until = NULL, next_attempt_at = %s, "
            "attempts = attempts - 1 "
            f"WHERE leased_by = %s AND id IN ({', '.join(['%s'] * len(ids_list))})",
            [connection.ops.adapt_datetimefield_value(until), worker_id, *ids_list],
        )
        lifecycle.move(State.LEASED, State.PENDING, cursor.rowcount)
