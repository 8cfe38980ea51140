"""The database side of the worker: claim, renew, release and resolve rows in batches.

Every function is one statement or one short transaction over many rows.
Statements start with a write, so that on SQLite they take the write lock
up front (no deferred-transaction lock upgrade that could fail with
"database is locked"), and on PostgreSQL, MySQL and MariaDB candidates are locked
with ``FOR UPDATE SKIP LOCKED`` so that concurrent workers never claim one row twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from django.db import connections, transaction
from django.utils import timezone

from .. import lifecycle
from ..lifecycle import State
from ..models import Activity, Host, Payload, ScheduledActivity, pair_key
from . import hosts
from .jobs import Job, Outcome
from .sql import CHUNK, LOG_COLUMNS, alias, chunks, derived, dt, mysql, placeholders, values_list

#: ``enqueue()``'s statement on PostgreSQL (migration 0012).
ENQUEUE_FUNCTION = "activity_queue_enqueue_v4"


def claim(worker_id: str, limit: int, lease: float, *, per_host: int | None = None,
          room: dict[str, int] | None = None, probation: dict[str, int] | None = None,
          exclude_hosts: Iterable[str] = (), exclude_ids: Iterable[int] = (),
          now: datetime | None = None) -> list[Job]:
    """Lease up to ``limit`` due rows, oldest due first, at most ``per_host`` for one host,
    and count an attempt for each.

    The attempt is counted here, not when its outcome is written, so that
    ``MAX_ATTEMPTS`` bounds the requests a receiver sees even when a worker dies
    with deliveries in flight; a row handed back unsent gets its attempt back
    (:func:`release`, a deferred outcome).

    ``room`` lowers that cap for hosts the caller already holds rows of; paused,
    unavailable and excluded hosts are skipped. The per-host cap is applied in SQL, over a
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
    connection = connections[alias()]
    if mysql(connection):
        with transaction.atomic(using=connection.alias):
            rows = _claim_mysql(connection, worker_id, limit, lease, per_host, room or {},
                                probation or {}, exclude_hosts, exclude_ids, now)
            payloads = _payloads(connection, {r[3] for r in rows})
        return _jobs(rows, payloads)
    pg = connection.vendor == "postgresql"
    table = ScheduledActivity._meta.db_table
    probation = {h: n for h, n in (probation or {}).items() if n > 0}
    exclude = sorted(set(exclude_hosts) | set(probation))
    skip_ids = sorted(exclude_ids)
    id_filter, id_params = "", []
    if skip_ids:
        id_filter = (" AND NOT (id = ANY(%s))" if pg
                     else f" AND id NOT IN ({placeholders(len(skip_ids))})")
        id_params = [skip_ids] if pg else skip_ids
    rooms, room_params = values_list(connection, [["", 0], *([h, n] for h, n in
                                                        {**(room or {}), **probation}.items())],
                                 ["varchar(255)", "integer"])
    collate = ' COLLATE "C"' if pg else ""
    lock = "FOR UPDATE SKIP LOCKED" if pg else ""
    stamp = dt(connection, now)
    due = _due(id_filter)
    window = _window(limit, per_host)
    candidates = f"""
        SELECT * FROM ({due}
            {f"AND host NOT IN ({placeholders(len(exclude))})" if exclude else ""}
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
        UPDATE {table} SET leased_by = %s, leased_until = %s, attempts = attempts + 1
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
        RETURNING id, inbox, host, payload_id, attempts, has_predecessor
    """
    params = [*room_params, worker_id, dt(connection, now + timedelta(seconds=lease)),
              per_host, *candidate_params, limit]
    # One transaction: a claim whose payloads cannot be read leaves no row leased.
    with transaction.atomic(using=connection.alias):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        payloads = _payloads(connection, {r[3] for r in rows})
    return _jobs(rows, payloads)


def _jobs(rows: list, payloads: dict[int, tuple]) -> list[Job]:
    rows = sorted(rows, key=lambda r: r[0])
    jobs = [Job(row_id, inbox, host, attempts, bool(flag), *payloads[payload_id])
            for row_id, inbox, host, payload_id, attempts, flag in rows]
    retrying = sum(1 for job in jobs if job.attempts > 1)
    lifecycle.move(State.RETRYING, State.LEASED, retrying)
    lifecycle.move(State.PENDING, State.LEASED, len(jobs) - retrying)
    return jobs


def _due(id_filter: str) -> str:
    """The due rows nobody holds, of hosts neither paused nor unavailable, in every dialect;
    ``id_filter`` passes over ids as the dialect writes it. Parameters: now three times,
    then the filter's."""
    return f"""
        SELECT id, host, next_attempt_at FROM {ScheduledActivity._meta.db_table}
        WHERE next_attempt_at <= %s
          AND (leased_until IS NULL OR leased_until < %s)
          AND host NOT IN (SELECT host FROM {Host._meta.db_table}
                           WHERE paused_until > %s OR unavailable_since IS NOT NULL)
          {id_filter}"""


def _window(limit: int, per_host: int) -> int:
    """Due rows read to choose ``limit`` from: enough that a few busy hosts do not fill it."""
    return min(max(4 * limit, per_host), 20 * limit, 10_000)


def _claim_mysql(connection, worker_id: str, limit: int, lease: float, per_host: int,
                 room: dict[str, int], probation: dict[str, int], exclude_hosts: Iterable[str],
                 exclude_ids: Iterable[int], now: datetime) -> list[tuple]:
    """:func:`claim` on MySQL and MariaDB, in the caller's transaction: lock the window of
    the oldest due rows (``SKIP LOCKED``: rows another worker is claiming are passed
    over), keep at most each host's room of them, lease those by id, read them back."""
    table = ScheduledActivity._meta.db_table
    probation = {h: n for h, n in probation.items() if n > 0}
    exclude = sorted(set(exclude_hosts) | set(probation))
    skip_ids = sorted(exclude_ids)
    stamp = dt(connection, now)
    due = _due(f"AND id NOT IN ({placeholders(len(skip_ids))})" if skip_ids else "")
    window = _window(limit, per_host)
    reads = [(f"{due} {f'AND host NOT IN ({placeholders(len(exclude))})' if exclude else ''}"
              f" ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED",
              [stamp, stamp, stamp, *skip_ids, *exclude, window])]
    reads += [(f"{due} AND host = %s ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED",
               [stamp, stamp, stamp, *skip_ids, host, probation[host]])
              for host in sorted(probation)]
    caps = {**room, **probation}
    candidates = []
    with connection.cursor() as cursor:
        for sql, params in reads:
            cursor.execute(sql, params)
            candidates += cursor.fetchall()
        taken: dict[str, int] = {}
        picked = []
        for row_id, host, _at in sorted(candidates, key=lambda r: (r[2], r[0])):
            if taken.get(host, 0) < caps.get(host, per_host):
                taken[host] = taken.get(host, 0) + 1
                picked.append(row_id)
        picked = picked[:limit]
        rows: list[tuple] = []
        for chunk in chunks(picked):
            where = f"id IN ({placeholders(len(chunk))})"
            cursor.execute(
                f"UPDATE {table} SET leased_by = %s, leased_until = %s, attempts = attempts + 1"
                f" WHERE {where}",
                [worker_id, dt(connection, now + timedelta(seconds=lease)), *chunk])
            cursor.execute(f"SELECT id, inbox, host, payload_id, attempts, has_predecessor"
                           f" FROM {table} WHERE {where}", chunk)
            rows += cursor.fetchall()
    return rows


def _payloads(connection, ids: set[int]) -> dict[int, tuple]:
    """The claimed rows' payloads, each read once however many of its deliveries came
    (with the time the activity was enqueued, for the log rows, on PostgreSQL)."""
    found: dict[int, tuple] = {}
    pg = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        for chunk in chunks(sorted(ids)):
            # One array on PostgreSQL: a list of hundreds of parameters costs more to plan.
            cursor.execute(
                f"SELECT id, activity_type, activity_id, object_id, body, created_at "
                f"FROM {Payload._meta.db_table} WHERE id "
                + ("= ANY(%s::bigint[])" if pg else f"IN ({placeholders(len(chunk))})"),
                [chunk] if pg else chunk)
            for payload_id, kind, activity_id, object_id, body, created in cursor.fetchall():
                found[payload_id] = (kind, activity_id, object_id, body.encode(),
                                     created if pg else None)
    return found


def insert(using: str, payload: Payload, due: datetime,
           destinations: Sequence[tuple[str, str]]) -> list[ScheduledActivity]:
    """Write ``payload`` once and one scheduled row per ``(inbox, host)`` that refers to it,
    in one statement (on SQLite, two, and one more per 450 inboxes).

    The same statement sets ``has_predecessor``: whether another row about
    the object is queued for the inbox, or an activity about it was delivered
    there. Most rows have neither, and the redundancy and order checks skip
    them (see :mod:`activity_queue.sending.drops`) without a query of their own.
    The statement does not see the rows it writes, and each inbox appears
    once, so ``has_predecessor`` only reflects rows written before.
    On PostgreSQL the statement is the stored function of migration 0012, which
    also notifies dedicated workers at commit (:mod:`activity_queue.sending.listen`).
    MySQL and MariaDB read the new rows' ids back by their payload.
    """
    connection = connections[using]
    keys = {inbox: pair_key(payload.object_id, inbox) for inbox, _ in destinations}
    ids: dict[str, tuple[int, bool]] = {}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"SELECT * FROM {ENQUEUE_FUNCTION}(%s, %s, %s, %s, %s, %s, %s, %s, %s)", [
                payload.activity_id, payload.activity_type, payload.object_id, payload.body,
                payload.created_at, due, [inbox for inbox, _ in destinations],
                [host for _, host in destinations], list(keys.values())])
            for row_id, inbox, flag, payload.id in cursor.fetchall():
                ids[inbox] = (row_id, flag)
        elif mysql(connection):
            ids = _insert_mysql(cursor, connection, payload, keys, due, destinations)
        else:
            cursor.execute(
                f"INSERT INTO {Payload._meta.db_table} (activity_id, activity_type, object_id, "
                "body, created_at) VALUES (%s, %s, %s, %s, %s) RETURNING id",
                [payload.activity_id, payload.activity_type, payload.object_id, payload.body,
                 dt(connection, payload.created_at)])
            payload.id = cursor.fetchone()[0]
            for chunk in chunks(list(destinations), CHUNK // 2):
                cursor.execute(*_insert_statement(connection, payload, keys, due, chunk))
                ids.update((r[1], (r[0], bool(r[2]))) for r in cursor.fetchall())
    payload._state.adding = False
    payload._state.db = using
    rows = []
    for inbox, host in destinations:
        pk, flag = ids[inbox]
        row = ScheduledActivity(id=pk, payload=payload, pair_key=keys[inbox], inbox=inbox,
                                host=host, has_predecessor=flag, next_attempt_at=due)
        row._state.adding = False
        row._state.db = using
        rows.append(row)
    return rows


def _insert_mysql(cursor, connection, payload: Payload, keys: dict[str, int], due: datetime,
                  destinations: Sequence[tuple[str, str]]) -> dict[str, tuple[int, bool]]:
    table = ScheduledActivity._meta.db_table
    log = Activity._meta.db_table
    cursor.execute(
        f"INSERT INTO {Payload._meta.db_table} (activity_id, activity_type, object_id, "
        "body, created_at) VALUES (%s, %s, %s, %s, %s)",
        [payload.activity_id, payload.activity_type, payload.object_id, payload.body,
         dt(connection, payload.created_at)])
    payload.id = cursor.lastrowid
    if payload.object_id:
        predecessor = (
            f"(EXISTS (SELECT 1 FROM {table} q WHERE q.pair_key = v.pair_key"
            f" AND q.inbox = v.inbox)"
            f" OR EXISTS (SELECT 1 FROM {log} d WHERE d.inbox = v.inbox AND d.object_id = %s"
            f" AND d.direction = '{Activity.Direction.OUTBOUND.value}'"
            f" AND d.status = '{State.SENT.value}'))")
        predecessor_params = [payload.object_id]
    else:
        predecessor, predecessor_params = "FALSE", []
    for chunk in chunks(list(destinations), CHUNK // 2):
        values, params = derived([[inbox, host, keys[inbox]] for inbox, host in chunk],
                                 ["inbox", "host", "pair_key"])
        cursor.execute(
            f"""
            INSERT INTO {table} (payload_id, pair_key, next_attempt_at, inbox, host, attempts,
                                 last_error, leased_by, has_predecessor)
            SELECT %s, v.pair_key, %s, v.inbox, v.host, 0, '', '', {predecessor}
            FROM ({values}) v
            """,
            [payload.id, dt(connection, due), *predecessor_params, *params])
    cursor.execute(f"SELECT id, inbox, has_predecessor FROM {table} WHERE payload_id = %s",
                   [payload.id])
    return {inbox: (row_id, bool(flag)) for row_id, inbox, flag in cursor.fetchall()}


def _insert_statement(connection, payload: Payload, keys: dict[str, int], due: datetime,
                      chunk: Sequence[tuple[str, str]]) -> tuple[str, list]:
    """The SQLite INSERT of :func:`insert`, in a simpler form for one inbox (the usual case)."""
    table = ScheduledActivity._meta.db_table
    log = Activity._meta.db_table
    object_id = payload.object_id
    one = len(chunk) == 1
    inbox, key = ("%s", "%s") if one else ("v.inbox", "v.pair_key")
    if object_id:
        # Literal constants, so that the partial index aq_act_delivered applies, and named:
        # without ANALYZE statistics SQLite prefers aq_act_status (status = 'sent') and reads
        # every delivered row, under the caller's write lock, at every enqueue().
        predecessor = (
            f"(EXISTS (SELECT 1 FROM {table} q WHERE q.pair_key = {key} AND q.inbox = {inbox})"
            f" OR EXISTS (SELECT 1 FROM {log} d INDEXED BY aq_act_delivered"
            f" WHERE d.inbox = {inbox} AND d.object_id = %s"
            f" AND d.direction = '{Activity.Direction.OUTBOUND.value}'"
            f" AND d.status = '{State.SENT.value}'))"
        )
        only = chunk[0][0]
        predecessor_params = [keys[only], only, only, object_id] if one else [object_id]
    else:  # the checks concern activities about an object only
        predecessor, predecessor_params = "FALSE", []
    values, params = ("", []) if one else values_list(
        connection, [[inbox, host, keys[inbox]] for inbox, host in chunk],
        ["varchar(2000)", "varchar(255)", "bigint"])
    sql = f"""
        {f"WITH v(inbox, host, pair_key) AS ({values})" if values else ""}
        INSERT INTO {table} (payload_id, pair_key, next_attempt_at, inbox, host, attempts,
                             last_error, leased_by, has_predecessor)
        SELECT %s, {"%s, %s, %s, %s" if one else "v.pair_key, %s, v.inbox, v.host"},
               0, '', '', {predecessor}
        {"" if one else "FROM v"}
        RETURNING id, inbox, has_predecessor
    """
    params += [payload.id]
    if one:
        params += [keys[chunk[0][0]], dt(connection, due), *chunk[0]]
    else:
        params += [dt(connection, due)]
    params += predecessor_params
    return sql, params


def renew(worker_id: str, ids: Sequence[int], lease: float) -> set[int]:
    """Extend the lease of rows this worker still holds (slow hosts, long waits).

    Returns the ids renewed: a row missing from them was taken by another worker after
    its lease ran out (or is gone), and this worker must not send it.
    """
    connection = connections[alias()]
    table = ScheduledActivity._meta.db_table
    until = dt(connection, timezone.now() + timedelta(seconds=lease))
    renewed: set[int] = set()
    if mysql(connection):
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            for chunk in chunks(list(ids)):
                held = _held(cursor, worker_id, chunk)
                if held:
                    cursor.execute(f"UPDATE {table} SET leased_until = %s "
                                   f"WHERE id IN ({placeholders(len(held))})", [until, *held])
                renewed.update(held)
        return renewed
    with connection.cursor() as cursor:
        for chunk in chunks(list(ids)):
            cursor.execute(
                f"UPDATE {table} SET leased_until = %s "
                f"WHERE leased_by = %s AND id IN ({placeholders(len(chunk))}) RETURNING id",
                [until, worker_id, *chunk],
            )
            renewed.update(r[0] for r in cursor.fetchall())
    return renewed


def release(worker_id: str, ids: Sequence[int]) -> int:
    """Give rows back unsent, with the attempt their claim counted taken back."""
    released = _update_held(worker_id, ids, "leased_until = NULL, leased_by = '', "
                                            "attempts = attempts - 1")
    lifecycle.move(State.LEASED, State.PENDING, released)
    return released


def release_attempts(worker_id: str, ids: Sequence[int]) -> int:
    """Take back the attempt the claim counted, for rows that will not be sent."""
    return _update_held(worker_id, ids, "attempts = attempts - 1")


def _update_held(worker_id: str, ids: Sequence[int], setters: str) -> int:
    connection = connections[alias()]
    table = ScheduledActivity._meta.db_table
    changed = 0
    with connection.cursor() as cursor:
        for chunk in chunks(list(ids)):
            cursor.execute(
                f"UPDATE {table} SET {setters} "
                f"WHERE leased_by = %s AND id IN ({placeholders(len(chunk))})",
                [worker_id, *chunk],
            )
            changed += cursor.rowcount
    return changed


def resolve(worker_id: str, outcomes: Sequence[Outcome], *, circuit_threshold: int,
            circuit_cooldown: float, cooldown_max: float, defer_for: float = 0.0,
            probes: int = 0, unavailable_after: float | None = None,
            now: datetime | None = None) -> tuple[list[Outcome], list[str], list[str]]:
    """Write a batch of outcomes in one transaction.

    Sent and finally failed rows become ``Activity`` rows and leave the queue;
    retries go back with their new due time; deferred rows go back as they
    were. Rows whose lease this worker lost (another worker took them after
    expiry) are left alone. With ``defer_for``, the backlog of a host that
    fails waits that long for its next answer, but for its ``probes`` oldest
    rows (see :func:`hosts.record`). Returns the outcomes that were written, the
    hosts whose circuit opened, and the hosts that became unavailable (failing for
    more than ``unavailable_after`` seconds), whose rows the caller then retires
    (:func:`hosts.retire`).
    """
    now = now or timezone.now()
    connection = connections[alias()]
    for outcome in outcomes:
        lifecycle.move(State.LEASED, outcome.state)
    final = [o for o in outcomes if o.state in (State.SENT, State.FAILED)]
    retry = [o for o in outcomes if o.state is State.RETRYING]
    deferred = [o for o in outcomes if o.state is State.PENDING]
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        written: set[int] = set()
        for chunk in chunks(final):
            written |= _finish(cursor, connection, worker_id, chunk, now)
        for chunk in chunks(retry):
            written |= _reschedule(cursor, connection, worker_id, chunk, attempted=True)
        for chunk in chunks(deferred):
            written |= _reschedule(cursor, connection, worker_id, chunk, attempted=False)
        opened, unavailable = hosts.record(
            outcomes, circuit_threshold, circuit_cooldown, cooldown_max, now,
            defer_for=defer_for, probes=probes, unavailable_after=unavailable_after)
    return [o for o in outcomes if o.job.id in written], opened, unavailable


#: The lease holder, as a joined row rather than a constant in the ``WHERE``: given a
#: constant filter on the queue, SQLite (3.38+, with ``ANALYZE`` statistics) builds a Bloom
#: filter over the whole queue table for each statement that joins a batch to it, which
#: made every resolve a scan of the queue (90 against 2 ms for 500 rows, 120,000 queued).
HOLDER = "w(worker) AS (VALUES (%s))"


def _held(cursor, worker_id: str, ids: Sequence[int]) -> list[int]:
    """Lock the rows of ``ids`` this worker holds, in the caller's transaction, and return
    their ids (MySQL and MariaDB: what ``RETURNING`` tells elsewhere)."""
    cursor.execute(
        f"SELECT id FROM {ScheduledActivity._meta.db_table} "
        f"WHERE leased_by = %s AND id IN ({placeholders(len(ids))}) FOR UPDATE",
        [worker_id, *ids])
    return [r[0] for r in cursor.fetchall()]


def _finish(cursor, connection, worker_id: str, chunk: Sequence[Outcome], now) -> set[int]:
    if connection.vendor == "postgresql":
        return _finish_pg(cursor, connection, worker_id, chunk, now)
    if mysql(connection):
        return _finish_mysql(cursor, connection, worker_id, chunk, now)
    table = ScheduledActivity._meta.db_table
    log = Activity._meta.db_table
    values, params = values_list(
        connection,
        [[o.job.id, o.state.value, o.status_code, o.error, o.excerpt, o.duration_ms]
         for o in chunk],
        ["bigint", "varchar(16)", "integer", "text", "text", "double precision"],
    )
    cursor.execute(
        f"""
        WITH v(id, status, status_code, error, excerpt, duration_ms) AS ({values}), {HOLDER}
        INSERT INTO {log} ({LOG_COLUMNS})
        SELECT m.activity_id, m.activity_type, m.object_id, s.inbox, s.host, s.payload_id,
               %s, v.status, v.status_code, v.error, v.excerpt, s.attempts,
               m.created_at, %s, v.duration_ms
        FROM v JOIN w JOIN {table} s ON s.id = v.id AND s.leased_by = w.worker
        JOIN {Payload._meta.db_table} m ON m.id = s.payload_id
        """,
        [*params, worker_id, Activity.Direction.OUTBOUND.value, dt(connection, now)],
    )
    ids = [o.job.id for o in chunk]
    cursor.execute(
        f"DELETE FROM {table} WHERE leased_by = %s AND id IN ({placeholders(len(ids))}) "
        "RETURNING id",
        [worker_id, *ids],
    )
    return {r[0] for r in cursor.fetchall()}


def _finish_pg(cursor, connection, worker_id: str, chunk: Sequence[Outcome], now
               ) -> set[int]:
    """Move rows from the queue to the log: a delete, then an insert of the log rows.

    Neither statement joins: the delete names its rows by ``id = ANY(…)`` (an index
    probe each) and the log rows travel as arrays. Joined to the batch instead, the
    plan depends on estimates that go wrong for a batch just leased (the planner
    expects no row of this worker's), and a join of the batch to itself ran in
    quadratic time; a queue of narrow rows also looks cheaper to scan whole.
    """
    table = ScheduledActivity._meta.db_table
    log = Activity._meta.db_table
    by_id = {o.job.id: o for o in chunk}
    cursor.execute(
        f"DELETE FROM {table} WHERE id = ANY(%s::bigint[]) AND leased_by = %s "
        "RETURNING id, inbox, host, payload_id, attempts",
        [list(by_id), worker_id])
    gone = cursor.fetchall()
    if not gone:
        return set()
    done = [by_id[row[0]] for row in gone]
    cursor.execute(
        f"""
        INSERT INTO {log} ({LOG_COLUMNS})
        SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                             %s::bigint[], %s::text[], %s::text[], %s::integer[], %s::text[],
                             %s::text[], %s::integer[], %s::timestamptz[],
                             %s::timestamptz[], %s::double precision[])
        """,
        [[o.job.activity_id for o in done], [o.job.activity_type for o in done],
         [o.job.object_id for o in done], [row[1] for row in gone], [row[2] for row in gone],
         [row[3] for row in gone], [Activity.Direction.OUTBOUND.value] * len(gone),
         [o.state.value for o in done], [o.status_code for o in done],
         [o.error for o in done], [o.excerpt for o in done], [row[4] for row in gone],
         [o.job.created_at or now for o in done], [now] * len(gone),
         [o.duration_ms for o in done]],
    )
    return {row[0] for row in gone}


def _finish_mysql(cursor, connection, worker_id: str, chunk: Sequence[Outcome], now
                  ) -> set[int]:
    """Move the rows this worker still holds to the log: lock them, copy, delete."""
    table = ScheduledActivity._meta.db_table
    held = set(_held(cursor, worker_id, [o.job.id for o in chunk]))
    if not held:
        return held
    values, params = derived(
        [[o.job.id, o.state.value, o.status_code, o.error, o.excerpt, o.duration_ms]
         for o in chunk if o.job.id in held],
        ["id", "status", "status_code", "error", "excerpt", "duration_ms"])
    cursor.execute(
        f"""
        INSERT INTO {Activity._meta.db_table} ({LOG_COLUMNS})
        SELECT m.activity_id, m.activity_type, m.object_id, s.inbox, s.host, s.payload_id,
               %s, v.status, v.status_code, v.error, v.excerpt, s.attempts,
               m.created_at, %s, v.duration_ms
        FROM ({values}) v JOIN {table} s ON s.id = v.id
        JOIN {Payload._meta.db_table} m ON m.id = s.payload_id
        """,
        [Activity.Direction.OUTBOUND.value, dt(connection, now), *params])
    cursor.execute(f"DELETE FROM {table} WHERE id IN ({placeholders(len(held))})", list(held))
    return held


def _reschedule(cursor, connection, worker_id: str, chunk: Sequence[Outcome],
                *, attempted: bool) -> set[int]:
    table = ScheduledActivity._meta.db_table
    now = timezone.now()
    if mysql(connection):
        return _reschedule_mysql(cursor, connection, worker_id, chunk, now,
                                 attempted=attempted)
    values, params = values_list(
        connection,
        [[o.job.id, dt(connection, o.retry_at or now), o.status_code, o.error]
         for o in chunk],
        ["bigint", "timestamp with time zone", "integer", "text"],
    )
    if attempted:
        setters = "last_status = v.status_code, last_error = v.error, "
    else:  # handed back unsent: the claim's attempt is given back
        setters = "attempts = attempts - 1, "
    # On PostgreSQL the rows are also named by ``id = ANY(…)``, so that they are found by
    # index probes however narrow the queue's rows make a scan look (see _finish_pg).
    pg = connection.vendor == "postgresql"
    probe = f" AND {table}.id = ANY(%s::bigint[])" if pg else ""
    cursor.execute(
        f"""
        WITH v(id, next_at, status_code, error) AS ({values}), {HOLDER}
        UPDATE {table} SET {setters}next_attempt_at = v.next_at,
               leased_by = '', leased_until = NULL
        FROM v, w WHERE {table}.id = v.id AND {table}.leased_by = w.worker{probe}
        RETURNING {table}.id
        """,
        [*params, worker_id, *([[o.job.id for o in chunk]] if pg else [])],
    )
    return {r[0] for r in cursor.fetchall()}




def _reschedule_mysql(cursor, connection, worker_id: str, chunk: Sequence[Outcome], now,
                      *, attempted: bool) -> set[int]:
    table = ScheduledActivity._meta.db_table
    held = set(_held(cursor, worker_id, [o.job.id for o in chunk]))
    if not held:
        return held
    values, params = derived(
        [[o.job.id, dt(connection, o.retry_at or now), o.status_code, o.error]
         for o in chunk if o.job.id in held],
        ["id", "next_at", "status_code", "error"])
    if attempted:
        setters = "s.last_status = v.status_code, s.last_error = v.error, "
    else:
        setters = "s.attempts = s.attempts - 1, "
    cursor.execute(
        f"UPDATE {table} s JOIN ({values}) v ON s.id = v.id SET {setters}"
        f"s.next_attempt_at = v.next_at, s.leased_by = '', s.leased_until = NULL",
        params)
    return held
