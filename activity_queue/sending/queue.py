"""The database side of the worker: claim, renew, release and resolve rows in batches.

Every function is one statement or one short transaction over many rows.
Statements start with a write, so that on SQLite they take the write lock
up front (no deferred-transaction lock upgrade that could fail with
"database is locked"), and on PostgreSQL candidates are locked with
``FOR UPDATE SKIP LOCKED`` so that concurrent workers never claim one row twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, router, transaction
from django.utils import timezone

from .. import lifecycle
from ..lifecycle import State
from ..models import Activity, Host, ScheduledActivity
from .jobs import Job, Outcome

CHUNK = 900
#: ``enqueue()``'s statement on PostgreSQL (migration 0009).
ENQUEUE_FUNCTION = "activity_queue_enqueue_v2"


def _alias() -> str:
    return router.db_for_write(ScheduledActivity)


def _dt(connection, value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


def _chunks(seq: Sequence, size: int = CHUNK) -> Iterable[Sequence]:
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


def _placeholders(n: int) -> str:
    return ", ".join(["%s"] * n)


def claim(worker_id: str, limit: int, lease: float, *, per_host: int | None = None,
          room: dict[str, int] | None = None, probation: dict[str, int] | None = None,
          exclude_hosts: Iterable[str] = (), exclude_ids: Iterable[int] = (),
          now: datetime | None = None) -> list[Job]:
    """Lease up to ``limit`` due rows, oldest due first, at most ``per_host`` for one host.

    ``room`` lowers that cap for hosts the caller already holds rows of; paused
    and excluded hosts are skipped. The per-host cap is applied in SQL, over a
    bounded window of the oldest due rows, so a backlog on one host neither
    crowds out the others nor makes the caller lease rows only to give them back.

    Hosts on ``probation`` (timing out, or a half-open circuit letting one probe
    through) get at most their given number of rows, read from their own range of
    the ``(host, next_attempt_at)`` index: the backlog of a dead host is usually the
    oldest due rows, and in the main window it would fill the window while
    yielding a row or two. Keep it to a few hosts: one subquery each.
    """
    if limit <= 0:
        return []
    per_host = per_host or limit
    now = now or timezone.now()
    connection = connections[_alias()]
    pg = connection.vendor == "postgresql"
    table = ScheduledActivity._meta.db_table
    hosts_table = Host._meta.db_table
    probation = {h: n for h, n in (probation or {}).items() if n > 0}
    exclude = sorted(set(exclude_hosts) | set(probation))
    skip_ids = sorted(exclude_ids)
    id_filter, id_params = "", []
    if skip_ids:
        id_filter = (" AND NOT (id = ANY(%s))" if pg
                     else f" AND id NOT IN ({_placeholders(len(skip_ids))})")
        id_params = [skip_ids] if pg else skip_ids
    rooms, room_params = _values(connection, [["", 0], *([h, n] for h, n in
                                                        {**(room or {}), **probation}.items())],
                                 ["varchar(255)", "integer"])
    collate = ' COLLATE "C"' if pg else ""
    lock = "FOR UPDATE SKIP LOCKED" if pg else ""
    stamp = _dt(connection, now)
    due = f"""
        SELECT id, host, next_attempt_at FROM {table}
        WHERE next_attempt_at <= %s
          AND (leased_until IS NULL OR leased_until < %s)
          AND host NOT IN (SELECT host FROM {hosts_table} WHERE paused_until > %s)
          {id_filter}"""
    window = min(max(4 * limit, per_host), 20 * limit, 10_000)
    candidates = f"""
        SELECT * FROM ({due}
            {f"AND host NOT IN ({_placeholders(len(exclude))})" if exclude else ""}
            ORDER BY next_attempt_at LIMIT %s {lock}) main"""
    candidate_params = [stamp, stamp, stamp, *id_params, *exclude, window]
    for i, host in enumerate(sorted(probation)):
        # One short range of the (host, next_attempt_at) index per host on probation.
        candidates += f"""
        UNION ALL
        SELECT * FROM ({due} AND host = %s
            ORDER BY next_attempt_at LIMIT %s {lock}) p{i}"""
        candidate_params += [stamp, stamp, stamp, *id_params, host, probation[host]]
    sql = f"""
        WITH r(host, room) AS ({rooms})
        UPDATE {table} SET leased_by = %s, leased_until = %s
        WHERE id IN (
            SELECT id FROM (
                SELECT c.id, c.next_attempt_at, COALESCE(r.room, %s) AS room,
                       ROW_NUMBER() OVER (PARTITION BY c.host{collate}
                                          ORDER BY c.next_attempt_at, c.id) AS rn
                FROM ({candidates}) c LEFT JOIN r ON r.host = c.host
            ) ranked
            WHERE rn <= room
            ORDER BY next_attempt_at
            LIMIT %s
        )
        RETURNING id, inbox, host, {"payload::text" if pg else "payload"}, attempts,
                  activity_type, activity_id, object_id, has_predecessor
    """
    params = [*room_params, worker_id, _dt(connection, now + timedelta(seconds=lease)),
              per_host, *candidate_params, limit]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    rows.sort(key=lambda r: r[0])
    jobs = [Job(r[0], r[1], r[2], r[3].encode(), r[4], r[5], r[6], r[7], bool(r[8]))
            for r in rows]
    retrying = sum(1 for job in jobs if job.attempts)
    lifecycle.move(State.RETRYING, State.LEASED, retrying)
    lifecycle.move(State.PENDING, State.LEASED, len(jobs) - retrying)
    return jobs


def insert(using: str, common: dict[str, Any], payload: str,
           destinations: Sequence[tuple[str, str]]) -> list[ScheduledActivity]:
    """Write one scheduled row per ``(inbox, host)`` in one statement (on SQLite, one per
    450 inboxes).

    The payload is sent to the database once per statement, not once per inbox
    (the ORM's ``bulk_create`` would serialise and bind it for every row).
    The same statement sets ``has_predecessor``: whether another row about
    the object is queued for the inbox, or an activity about it was delivered
    there. Most rows have neither, and the redundancy and order checks skip
    them (see :mod:`activity_queue.sending.drops`) without a query of their own.
    The statement does not see the rows it writes, and each inbox appears
    once, so ``has_predecessor`` only reflects rows written before.
    On PostgreSQL the statement is the stored function of migration 0009, which
    also notifies dedicated workers at commit (:mod:`activity_queue.sending.listen`).
    """
    connection = connections[using]
    ids: dict[str, tuple[int, bool]] = {}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"SELECT * FROM {ENQUEUE_FUNCTION}(%s, %s, %s, %s, %s, %s, %s, %s)", [
                common["activity_id"], common["activity_type"], common["object_id"], payload,
                common["created_at"], common["next_attempt_at"],
                [inbox for inbox, _ in destinations], [host for _, host in destinations]])
            ids.update((r[1], (r[0], r[2])) for r in cursor.fetchall())
        else:
            for chunk in _chunks(list(destinations), CHUNK // 2):
                cursor.execute(*_insert_statement(connection, common, payload, chunk))
                ids.update((r[1], (r[0], bool(r[2]))) for r in cursor.fetchall())
    rows = []
    for inbox, host in destinations:
        pk, flag = ids[inbox]
        row = ScheduledActivity(id=pk, inbox=inbox, host=host, has_predecessor=flag, **common)
        row._state.adding = False
        row._state.db = using
        rows.append(row)
    return rows


def _insert_statement(connection, common: dict[str, Any], payload: str,
                      chunk: Sequence[tuple[str, str]]) -> tuple[str, list]:
    """The SQLite INSERT of :func:`insert`, in a simpler form for one inbox (the usual case)."""
    table = ScheduledActivity._meta.db_table
    log = Activity._meta.db_table
    object_id = common["object_id"]
    one = len(chunk) == 1
    inbox = "%s" if one else "v.inbox"
    if object_id:
        # Literal constants, so that the partial index aq_act_delivered applies.
        predecessor = (
            f"(EXISTS (SELECT 1 FROM {table} q WHERE q.inbox = {inbox} AND q.object_id = %s)"
            f" OR EXISTS (SELECT 1 FROM {log} d WHERE d.inbox = {inbox} AND d.object_id = %s"
            f" AND d.direction = '{Activity.Direction.OUTBOUND.value}'"
            f" AND d.status = '{State.SENT.value}'))"
        )
        predecessor_params = ([chunk[0][0], object_id] * 2 if one else [object_id] * 2)
    else:  # the checks concern activities about an object only
        predecessor, predecessor_params = "FALSE", []
    values, params = ("", []) if one else _values(connection, [list(d) for d in chunk],
                                                  ["varchar(2000)", "varchar(255)"])
    sql = f"""
        {f"WITH v(inbox, host) AS ({values})" if values else ""}
        INSERT INTO {table} (activity_id, activity_type, object_id, payload, created_at,
                             next_attempt_at, inbox, host, attempts, last_error, leased_by,
                             has_predecessor)
        SELECT %s, %s, %s, %s, %s, %s, {"%s, %s" if one else "v.inbox, v.host"}, 0, '', '',
               {predecessor}
        {"" if one else "FROM v"}
        RETURNING id, inbox, has_predecessor
    """
    params += [common["activity_id"], common["activity_type"], object_id, payload,
               _dt(connection, common["created_at"]), _dt(connection, common["next_attempt_at"])]
    if one:
        params += list(chunk[0])
    params += predecessor_params
    return sql, params


def renew(worker_id: str, ids: Sequence[int], lease: float) -> int:
    """Extend the lease of rows this worker still holds (slow hosts, long waits)."""
    return _set_lease(worker_id, ids, timezone.now() + timedelta(seconds=lease))


def release(worker_id: str, ids: Sequence[int]) -> int:
    """Give rows back untouched: no attempt is counted."""
    released = _set_lease(worker_id, ids, None)
    lifecycle.move(State.LEASED, State.PENDING, released)
    return released


def defer_backlog(hosts: Iterable[str], until: datetime, *, limit: int = 2_000,
                  keep: int = 0, now: datetime | None = None) -> int:
    """Move the oldest due rows nobody holds of hosts that do not answer to ``until``,
    but for the ``keep`` oldest of each host, left due as its probes.

    No attempt is counted. A dead host's backlog is usually the oldest due rows:
    left there, every claim would scan past it, row by row. Up to ``limit`` rows
    per host per call, read from the ``(host, next_attempt_at)`` index; rows
    already waiting (not due) are not touched, so calling again with the same
    ``until`` only moves what came due since.
    """
    now = now or timezone.now()
    connection = connections[_alias()]
    with connection.cursor() as cursor:
        return sum(_move(cursor, connection, host, now, until, limit, now, skip=keep)
                   for host in sorted(set(hosts)))


def defer_paused(hosts: Iterable[str] | None = None, *, limit: int = 5_000,
                 now: datetime | None = None) -> int:
    """Move due rows nobody holds of paused hosts to the end of their host's pause.

    No attempt is counted: nothing can be sent to a paused host before then
    anyway. Left due, a paused host's backlog is skipped row by row by every
    claim until the pause ends (see ``bench/``: a 500-row claim behind 100,000
    such rows takes 66-102 ms instead of 9-12). Only rows already due move, so
    a row that sits exactly at ``paused_until`` was moved here, and closing the
    circuit early brings exactly those back (:func:`undefer`). ``hosts`` (default:
    every paused host) is a list to look at; the pause is checked again in the
    statement itself. Up to ``limit`` rows per call: a large backlog is moved
    over several calls rather than in one long write.
    """
    now = now or timezone.now()
    connection = connections[_alias()]
    if hosts is None:
        hosts = Host.objects.using(connection.alias).filter(paused_until__gt=now) \
            .values_list("host", flat=True)
    moved = 0
    with connection.cursor() as cursor:
        for host in sorted(set(hosts)):
            if moved >= limit:
                break
            moved += _move(cursor, connection, host, now, None, limit - moved, now)
    return moved


def undefer(waits: Iterable[tuple[str, datetime | None]], *,
            now: datetime | None = None) -> int:
    """Make due now the rows moved aside to wait for a host, ``(host, until)`` each: to
    the end of a pause (:func:`defer_paused`) or for its next answer
    (:func:`defer_backlog`), when that ends early (an answer, an operator resuming
    the host). Only rows at exactly ``until`` move, so retries keep their own time."""
    now = now or timezone.now()
    connection = connections[_alias()]
    table = ScheduledActivity._meta.db_table
    stamp = _dt(connection, now)
    made = 0
    with connection.cursor() as cursor:
        for host, until in sorted({(h, u) for h, u in waits if u is not None and u > now}):
            cursor.execute(
                f"UPDATE {table}{_host_range(connection)} SET next_attempt_at = %s WHERE host = %s"
                f" AND next_attempt_at = %s AND (leased_until IS NULL OR leased_until < %s)",
                [stamp, host, _dt(connection, until), stamp])
            made += cursor.rowcount
    return made


def close_circuits(hosts: Iterable[str], *, now: datetime | None = None) -> int:
    """Close the circuit of ``hosts`` (a host's health row only exists while it is
    troubled, so closing is deleting it) and bring back the rows moved aside to wait
    for them (:func:`undefer`). Returns the rows deleted.

    Usually none of the hosts has a row: then this is one ``SELECT``, as cheap as
    the ``DELETE`` it replaces on the resolve path.
    """
    troubled = list(Host.objects.filter(host__in=list(hosts)).values_list(
        "host", "paused_until", "deferred_until"))
    if not troubled:
        return 0
    undefer([(h, p) for h, p, _ in troubled] + [(h, d) for h, _, d in troubled], now=now)
    removed, _ = Host.objects.filter(host__in=[h for h, _, _ in troubled]).delete()
    return removed


def _move(cursor, connection, host: str, before: datetime, until: datetime | None,
          limit: int, now: datetime, skip: int = 0) -> int:
    """Set ``next_attempt_at = until`` on up to ``limit`` of ``host``'s rows due before
    ``before`` that nobody holds, oldest first after the ``skip`` oldest: one range of
    the host's index (ordered, so that the planner keeps to it). ``until`` None: the end
    of the host's pause, read in the statement itself, and nothing moves if it is no
    longer paused."""
    table = ScheduledActivity._meta.db_table
    hosts_table = Host._meta.db_table
    lock = "FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    stamp = _dt(connection, now)
    if until is None:
        target = f"(SELECT h.paused_until FROM {hosts_table} h WHERE h.host = %s)"
        target_params = [host]
        paused = (f" AND EXISTS (SELECT 1 FROM {hosts_table} h"
                  f" WHERE h.host = %s AND h.paused_until > %s)")
        paused_params = [host, stamp]
    else:
        target, target_params, paused, paused_params = "%s", [_dt(connection, until)], "", []
    cursor.execute(
        f"UPDATE {table} SET next_attempt_at = {target} WHERE id IN ("
        f"SELECT id FROM {table}{_host_range(connection)} WHERE host = %s AND next_attempt_at < %s"
        f" AND (leased_until IS NULL OR leased_until < %s){paused}"
        f" ORDER BY next_attempt_at LIMIT %s OFFSET %s {lock})",
        [*target_params, host, _dt(connection, before), stamp, *paused_params, limit, skip])
    return cursor.rowcount


def _host_range(connection) -> str:
    """On SQLite, read one host's rows from its range of ``(host, next_attempt_at)``.

    Rows of many hosts share one ``next_attempt_at`` (a fan-out; the hosts of a batch
    that failed together wait until one time), and SQLite's planner may prefer the
    covering due index (:class:`~activity_queue.models.DueIndex`), which holds
    ``host`` too, and read every row at that time: 1.2 ms instead of 0.02 ms for a
    5-row host beside 20,000 others.
    """
    return " INDEXED BY aq_sched_host_due" if connection.vendor == "sqlite" else ""


def _set_lease(worker_id: str, ids: Sequence[int], until: datetime | None) -> int:
    connection = connections[_alias()]
    table = ScheduledActivity._meta.db_table
    changed = 0
    with connection.cursor() as cursor:
        for chunk in _chunks(list(ids)):
            cursor.execute(
                f"UPDATE {table} SET leased_until = %s, leased_by = %s "
                f"WHERE leased_by = %s AND id IN ({_placeholders(len(chunk))})",
                [_dt(connection, until) if until else None, worker_id if until else "",
                 worker_id, *chunk],
            )
            changed += cursor.rowcount
    return changed


def resolve(worker_id: str, outcomes: Sequence[Outcome], *, circuit_threshold: int,
            circuit_cooldown: float, cooldown_max: float, defer_for: float = 0.0,
            probes: int = 0, now: datetime | None = None) -> tuple[list[Outcome], list[str]]:
    """Write a batch of outcomes in one transaction.

    Sent and finally failed rows become ``Activity`` rows and leave the queue;
    retries go back with their new due time; deferred rows go back as they
    were. Rows whose lease this worker lost (another worker took them after
    expiry) are left alone. With ``defer_for``, the backlog of a host that
    fails waits that long for its next answer, but for its ``probes`` oldest
    rows (see :func:`_update_hosts`). Returns the outcomes that were written
    and the hosts whose circuit opened.
    """
    now = now or timezone.now()
    connection = connections[_alias()]
    for outcome in outcomes:
        lifecycle.move(State.LEASED, outcome.state)
    final = [o for o in outcomes if o.state in (State.SENT, State.FAILED)]
    retry = [o for o in outcomes if o.state is State.RETRYING]
    deferred = [o for o in outcomes if o.state is State.PENDING]
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        written: set[int] = set()
        for chunk in _chunks(final):
            written |= _finish(cursor, connection, worker_id, chunk, now)
        for chunk in _chunks(retry):
            written |= _reschedule(cursor, connection, worker_id, chunk, count_attempt=True)
        for chunk in _chunks(deferred):
            written |= _reschedule(cursor, connection, worker_id, chunk, count_attempt=False)
        opened = _update_hosts(outcomes, circuit_threshold, circuit_cooldown, cooldown_max, now,
                               defer_for=defer_for, probes=probes)
    return [o for o in outcomes if o.job.id in written], opened


def _values(connection, rows: list[list], casts: Sequence[str]) -> tuple[str, list]:
    """A ``VALUES`` list; PostgreSQL needs the first row typed, SQLite needs nothing."""
    pg = connection.vendor == "postgresql"
    first = ", ".join(f"CAST(%s AS {c})" if pg else "%s" for c in casts)
    rest = "(" + _placeholders(len(casts)) + ")"
    sql = "VALUES (" + first + ")" + "".join(", " + rest for _ in rows[1:])
    return sql, [p for row in rows for p in row]


#: The lease holder, as a joined row rather than a constant in the ``WHERE``: given a
#: constant filter on the queue, SQLite (3.38+, with ``ANALYZE`` statistics) builds a Bloom
#: filter over the whole queue table for each statement that joins a batch to it, which
#: made every resolve a scan of the queue (90 against 2 ms for 500 rows, 120,000 queued).
HOLDER = "w(worker) AS (VALUES (%s))"

LOG_COLUMNS = """activity_id, activity_type, object_id, inbox, host, payload, direction,
                 status, status_code, error, response_excerpt, attempts, created_at,
                 resolved_at, duration_ms"""


def _finish(cursor, connection, worker_id: str, chunk: Sequence[Outcome], now) -> set[int]:
    if connection.vendor == "postgresql":
        return _finish_pg(cursor, connection, worker_id, chunk, now)
    table = ScheduledActivity._meta.db_table
    log = Activity._meta.db_table
    values, params = _values(
        connection,
        [[o.job.id, o.state.value, o.status_code, o.error, o.excerpt, o.duration_ms]
         for o in chunk],
        ["bigint", "varchar(16)", "integer", "text", "text", "double precision"],
    )
    cursor.execute(
        f"""
        WITH v(id, status, status_code, error, excerpt, duration_ms) AS ({values}), {HOLDER}
        INSERT INTO {log} ({LOG_COLUMNS})
        SELECT s.activity_id, s.activity_type, s.object_id, s.inbox, s.host, s.payload,
               %s, v.status, v.status_code, v.error, v.excerpt, s.attempts + 1,
               s.created_at, %s, v.duration_ms
        FROM v JOIN w JOIN {table} s ON s.id = v.id AND s.leased_by = w.worker
        """,
        [*params, worker_id, Activity.Direction.OUTBOUND.value, _dt(connection, now)],
    )
    ids = [o.job.id for o in chunk]
    cursor.execute(
        f"DELETE FROM {table} WHERE leased_by = %s AND id IN ({_placeholders(len(ids))}) "
        "RETURNING id",
        [worker_id, *ids],
    )
    return {r[0] for r in cursor.fetchall()}


def _finish_pg(cursor, connection, worker_id: str, chunk: Sequence[Outcome], now
               ) -> set[int]:
    """Move rows from the queue to the log in one statement.

    The outcomes travel as six arrays rather than a ``VALUES`` list of six
    parameters per row: a few parameters to bind and a plan that does not
    grow with the batch.
    """
    table = ScheduledActivity._meta.db_table
    log = Activity._meta.db_table
    cursor.execute(
        f"""
        WITH v AS (
            SELECT * FROM unnest(%s::bigint[], %s::varchar[], %s::integer[], %s::text[],
                                 %s::text[], %s::double precision[])
                AS v(id, status, status_code, error, excerpt, duration_ms)
        ), gone AS (
            DELETE FROM {table} s USING v WHERE s.id = v.id AND s.leased_by = %s
            RETURNING s.*, v.status, v.status_code, v.error, v.excerpt, v.duration_ms
        ), logged AS (
            INSERT INTO {log} ({LOG_COLUMNS})
            SELECT activity_id, activity_type, object_id, inbox, host, payload, %s, status,
                   status_code, error, excerpt, attempts + 1, created_at, %s, duration_ms
            FROM gone
        )
        SELECT id FROM gone
        """,
        [[o.job.id for o in chunk], [o.state.value for o in chunk],
         [o.status_code for o in chunk], [o.error for o in chunk],
         [o.excerpt for o in chunk], [o.duration_ms for o in chunk],
         worker_id, Activity.Direction.OUTBOUND.value, now],
    )
    return {r[0] for r in cursor.fetchall()}


def _reschedule(cursor, connection, worker_id: str, chunk: Sequence[Outcome],
                *, count_attempt: bool) -> set[int]:
    table = ScheduledActivity._meta.db_table
    now = timezone.now()
    values, params = _values(
        connection,
        [[o.job.id, _dt(connection, o.retry_at or now), o.status_code, o.error]
         for o in chunk],
        ["bigint", "timestamp with time zone", "integer", "text"],
    )
    if count_attempt:
        setters = ("attempts = attempts + 1, last_status = v.status_code, "
                   "last_error = v.error, ")
    else:
        setters = ""
    cursor.execute(
        f"""
        WITH v(id, next_at, status_code, error) AS ({values}), {HOLDER}
        UPDATE {table} SET {setters}next_attempt_at = v.next_at,
               leased_by = '', leased_until = NULL
        FROM v, w WHERE {table}.id = v.id AND {table}.leased_by = w.worker
        RETURNING {table}.id
        """,
        [*params, worker_id],
    )
    return {r[0] for r in cursor.fetchall()}


def _update_hosts(outcomes: Sequence[Outcome], threshold: int, cooldown: float,
                  cooldown_max: float, now: datetime, *, defer_for: float = 0.0,
                  probes: int = 0) -> list[str]:
    """Fold this batch's outcomes into each host's health; return hosts newly paused.

    A host that fails (a timeout, a refused connection, a 5xx…) has its backlog
    moved out of the claims' way until ``now + defer_for``, all but its ``probes``
    oldest due rows, which stay due so that it is tried again. Left due, a dead
    host's backlog stays the oldest rows and every claim scans past it row by
    row. The time is kept in the host's health row and set once per episode, so
    each row is moved once (moving rewrites it; moving the same rows again at
    every timeout cost more than the scans it saved: 24,000 rewrites for 6,000
    rows in a black-hole run of ``bench/``), and whichever worker sees the host
    answer again brings the rows back at once.
    """
    touched: dict[str, list[Outcome]] = {}
    answered: set[str] = set()
    for o in outcomes:
        if o.state is State.SENT or o.host_fault:
            touched.setdefault(o.job.host, []).append(o)
        elif o.status_code is not None:
            answered.add(o.job.host)  # alive, if not well: a 404 is an answer too
    if answered := answered - touched.keys():
        _bring_back(answered, now)
    if not touched:
        return []
    troubled = [h for h, seq in touched.items() if any(o.host_fault for o in seq)]
    healthy = [h for h in touched if h not in troubled]
    if healthy:
        close_circuits(healthy, now=now)
    if not troubled:
        return []
    known = {h.host: h for h in Host.objects.filter(host__in=troubled)}
    opened: list[str] = []
    save: list[Host] = []
    back: list[tuple[str, datetime]] = []
    waits: dict[datetime, list[str]] = {}
    for name in troubled:
        health = known.get(name) or Host(host=name)
        was_paused_until = health.paused_until
        for o in touched[name]:
            if o.state is State.SENT:
                health.consecutive_failures = health.trips = 0
                health.paused_until = None
                if health.deferred_until is not None:
                    back.append((name, health.deferred_until))
                    health.deferred_until = None
                continue
            health.consecutive_failures += 1
            health.last_error = o.error[:500]
            paused = health.paused_until is not None and health.paused_until > now
            if health.consecutive_failures >= threshold and not paused:
                health.trips += 1
                pause = min(cooldown_max, cooldown * 2 ** min(health.trips - 1, 32))
                health.paused_until = now + timedelta(seconds=pause)
                opened.append(name)
        if was_paused_until is not None and health.paused_until is None:
            back.append((name, was_paused_until))
        if defer_for > 0 and health.consecutive_failures:
            if health.deferred_until is None or health.deferred_until <= now:
                health.deferred_until = now + timedelta(seconds=defer_for)
            waits.setdefault(health.deferred_until, []).append(name)
        health.updated_at = now
        save.append(health)
    undefer(back, now=now)
    Host.objects.bulk_create(
        save, update_conflicts=True, unique_fields=["host"],
        update_fields=["consecutive_failures", "trips", "paused_until", "deferred_until",
                       "last_error", "updated_at"],
    )
    for until, hosts in waits.items():
        defer_backlog(hosts, until, keep=probes, now=now)
    return opened


def _bring_back(hosts: Iterable[str], now: datetime) -> None:
    """The backlog of hosts that answered, if it waits for their answer (no query else)."""
    waiting = list(Host.objects.filter(host__in=list(hosts), deferred_until__gt=now)
                   .values_list("host", "deferred_until"))
    if waiting:
        undefer(waiting, now=now)
        Host.objects.filter(host__in=[h for h, _ in waiting]).update(deferred_until=None)


def tripped_hosts(threshold: int) -> set[str]:
    """Hosts whose circuit opened and has not closed since: paused, or half-open.

    Paused ones are skipped by :func:`claim`; for the others the worker lets one
    probe through at a time. Listing them while still paused means a worker that
    caches this set never mistakes a host whose pause just ended for a healthy one.
    """
    return set(
        Host.objects.filter(consecutive_failures__gte=threshold).values_list("host", flat=True)
    )
