"""A host's health, in one place: what every worker shares, and what one worker knows.

Shared, persisted in the ``Host`` row: consecutive failures, how often the
circuit opened, the pause, where the backlog of a failing host waits for
its next answer, when its failure streak began, and whether it is
*unavailable* (failing for longer than ``UNAVAILABLE_AFTER``, or stopped by an
operator). :func:`record` folds a batch of outcomes into it inside the
resolve's transaction; :func:`close_circuits` and the ``defer_*`` functions
move the backlog that waits for a host; :func:`retire` ends the queued rows of
unavailable hosts, and :func:`take_probes` picks the ones to probe.

One worker's own, in a :class:`HostBook` shared with its transport: how many
rows it holds for each host, which hosts answer and which time out (those are
on probation: a few rows at a time, from a window of their own), which have a
half-open circuit (one probe at a time) or are paused, and the transport's
window of concurrent requests to each host, which opens as the host answers
and halves at each timeout, as a TCP window does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connections, router, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from .. import lifecycle
from ..conf import Config
from ..lifecycle import State
from ..models import Activity, Host, Payload, ScheduledActivity, troubled_hosts_q
from .jobs import Job, Outcome
from .sql import CHUNK, LOG_COLUMNS, alias, dt, mysql, placeholders

#: Seconds between two probes of a host that is unavailable (a GET of its origin).
PROBE_EVERY = 3 * 3600.0
#: Seconds a process trusts its list of unavailable hosts (:func:`unavailable`).
UNAVAILABLE_TTL = 30.0


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
    connection = connections[alias()]
    with connection.cursor() as cursor:
        return sum(_move(cursor, connection, host, now, until, limit, now, skip=keep)
                   for host in sorted(set(hosts)))


def defer_paused(hosts: Iterable[str] | None = None, *, limit: int = 5_000,
                 now: datetime | None = None) -> int:
    """Move due rows nobody holds of paused hosts to the end of their host's pause.

    No attempt is counted: nothing can be sent to a paused host before then
    anyway. Left due, a paused host's backlog is skipped row by row by every
    claim until the pause ends (``bench/`` measures a claim behind such a
    backlog). Only rows already due move, so
    a row that sits exactly at ``paused_until`` was moved here, and closing the
    circuit early brings exactly those back (:func:`undefer`). ``hosts`` (default:
    every paused host) is a list to look at; the pause is checked again in the
    statement itself. Up to ``limit`` rows per call: a large backlog is moved
    over several calls rather than in one long write.
    """
    now = now or timezone.now()
    connection = connections[alias()]
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
    connection = connections[alias()]
    table = ScheduledActivity._meta.db_table
    stamp = dt(connection, now)
    made = 0
    with connection.cursor() as cursor:
        for host, until in sorted({(h, u) for h, u in waits if u is not None and u > now}):
            cursor.execute(
                f"UPDATE {table}{_host_range(connection)} SET next_attempt_at = %s WHERE host = %s"
                f" AND next_attempt_at = %s AND (leased_until IS NULL OR leased_until < %s)",
                [stamp, host, dt(connection, until), stamp])
            made += cursor.rowcount
    return made


def close_circuits(hosts: Iterable[str], *, now: datetime | None = None,
                   keep_stopped: bool = False) -> int:
    """Close the circuit of ``hosts`` (a host's health row only exists while it is
    troubled, or to remember its signature scheme, so closing is deleting it or
    clearing its troubles), which also makes an unavailable host available again,
    and bring back the rows moved aside to wait for them (:func:`undefer`). Returns
    the rows closed. With ``keep_stopped``, hosts an operator stopped by hand are
    left alone: only an operator resumes them.

    Usually none of the hosts has a troubled row: then this is one ``SELECT``, as
    cheap as the ``DELETE`` it replaces on the resolve path.
    """
    rows = Host.objects.filter(troubled_hosts_q(), host__in=list(hosts))
    if keep_stopped:
        rows = rows.filter(unavailable_by="")
    troubled = list(rows.values_list("host", "paused_until", "deferred_until",
                                     "unavailable_since", "signature_scheme"))
    if not troubled:
        return 0
    undefer([(h, p) for h, p, *_ in troubled] + [(h, d) for h, _, d, *_ in troubled], now=now)
    names = [h for h, *_ in troubled]
    removed, _ = Host.objects.filter(host__in=names, signature_scheme="").delete()
    removed += Host.objects.filter(host__in=names).exclude(signature_scheme="").update(
        consecutive_failures=0, trips=0, paused_until=None, deferred_until=None,
        failing_since=None, unavailable_since=None, unavailable_by="", last_error="",
        updated_at=now or timezone.now())
    if any(u is not None for _, _, _, u, _ in troubled):
        forget_unavailable()
    return removed


def remember_schemes(outcomes: Iterable[Outcome], now: datetime) -> None:
    """Keep the signature scheme each host accepted after refusing the other (an outcome's
    ``signature_scheme``), in its health row, for every worker to start with."""
    learned = {o.job.host: o.signature_scheme for o in outcomes if o.signature_scheme}
    if learned:
        Host.objects.bulk_create(
            [Host(host=h, signature_scheme=s, updated_at=now) for h, s in learned.items()],
            update_conflicts=True, unique_fields=_upsert_target(),
            update_fields=["signature_scheme", "updated_at"])


def signature_schemes() -> dict[str, str]:
    """The scheme each host that told us accepts (one query)."""
    return dict(Host.objects.exclude(signature_scheme="")
                .values_list("host", "signature_scheme"))


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
    stamp = dt(connection, now)
    if until is None:
        target = f"(SELECT h.paused_until FROM {hosts_table} h WHERE h.host = %s)"
        target_params = [host]
        paused = (f" AND EXISTS (SELECT 1 FROM {hosts_table} h"
                  f" WHERE h.host = %s AND h.paused_until > %s)")
        paused_params = [host, stamp]
    else:
        target, target_params, paused, paused_params = "%s", [dt(connection, until)], "", []
    if mysql(connection):
        # No LIMIT in a subquery of the table being updated there: read the ids, then
        # move those whose state still allows it.
        cursor.execute(
            f"SELECT id FROM {table} WHERE host = %s AND next_attempt_at < %s"
            f" AND (leased_until IS NULL OR leased_until < %s)"
            f" ORDER BY next_attempt_at LIMIT %s OFFSET %s",
            [host, dt(connection, before), stamp, limit, skip])
        ids = [r[0] for r in cursor.fetchall()]
        if not ids:
            return 0
        cursor.execute(
            f"UPDATE {table} SET next_attempt_at = {target}"
            f" WHERE id IN ({placeholders(len(ids))})"
            f" AND (leased_until IS NULL OR leased_until < %s){paused}",
            [*target_params, *ids, stamp, *paused_params])
        return cursor.rowcount
    cursor.execute(
        f"UPDATE {table} SET next_attempt_at = {target} WHERE id IN ("
        f"SELECT id FROM {table}{_host_range(connection)} WHERE host = %s AND next_attempt_at < %s"
        f" AND (leased_until IS NULL OR leased_until < %s){paused}"
        f" ORDER BY next_attempt_at LIMIT %s OFFSET %s {lock})",
        [*target_params, host, dt(connection, before), stamp, *paused_params, limit, skip])
    return cursor.rowcount


def _upsert_target() -> list[str] | None:
    """The conflict target of an upsert of host rows: MySQL takes none (any unique key)."""
    features = connections[router.db_for_write(Host)].features
    return ["host"] if features.supports_update_conflicts_with_target else None


def _host_range(connection) -> str:
    """On SQLite, read one host's rows from its range of ``(host, next_attempt_at)``.

    Rows of many hosts share one ``next_attempt_at`` (a fan-out; the hosts of a batch
    that failed together wait until one time), and SQLite's planner may prefer the
    covering due index (:class:`~activity_queue.models.DueIndex`), which holds
    ``host`` too, and read every row at that time: 1.2 ms instead of 0.02 ms for a
    5-row host beside 20,000 others.
    """
    return " INDEXED BY aq_sched_host_due" if connection.vendor == "sqlite" else ""


def record(outcomes: Sequence[Outcome], threshold: int, cooldown: float,
           cooldown_max: float, now: datetime, *, defer_for: float = 0.0,
           probes: int = 0, unavailable_after: float | None = None
           ) -> tuple[list[str], list[str]]:
    """Fold this batch's outcomes into each host's health; return the hosts newly paused,
    and those newly unavailable: failing, without an answer, for more than
    ``unavailable_after`` seconds since their streak began (``Host.failing_since``).
    An unavailable host is paused until its first probe (:data:`PROBE_EVERY`); its rows
    are left to :func:`retire`.

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
    remember_schemes(outcomes, now)
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
        return [], []
    troubled = [h for h, seq in touched.items() if any(o.host_fault for o in seq)]
    healthy = [h for h in touched if h not in troubled]
    if healthy:
        close_circuits(healthy, now=now, keep_stopped=True)
    if not troubled:
        return [], []
    known = {h.host: h for h in Host.objects.filter(host__in=troubled)}
    opened: list[str] = []
    retired: list[str] = []
    revived = False
    limit = timedelta(seconds=unavailable_after) if unavailable_after else None
    save: list[Host] = []
    back: list[tuple[str, datetime]] = []
    waits: dict[datetime, list[str]] = {}
    for name in troubled:
        health = known.get(name) or Host(host=name)
        was_paused_until = health.paused_until
        for o in touched[name]:
            if o.state is State.SENT:
                health.consecutive_failures = health.trips = 0
                health.failing_since = None
                if not health.unavailable_by:
                    revived = revived or health.unavailable_since is not None
                    health.paused_until = health.unavailable_since = None
                if health.deferred_until is not None:
                    back.append((name, health.deferred_until))
                    health.deferred_until = None
                continue
            if health.failing_since is None:
                health.failing_since = now
            health.consecutive_failures += 1
            health.last_error = o.error[:500]
            paused = health.paused_until is not None and health.paused_until > now
            if (health.consecutive_failures >= threshold and not paused
                    and health.unavailable_since is None):
                health.trips += 1
                pause = min(cooldown_max, cooldown * 2 ** min(health.trips - 1, 32))
                health.paused_until = now + timedelta(seconds=pause)
                opened.append(name)
        if (limit is not None and health.unavailable_since is None
                and health.failing_since is not None and now - health.failing_since > limit):
            health.unavailable_since = now
            health.paused_until = now + timedelta(seconds=PROBE_EVERY)
            retired.append(name)
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
        save, update_conflicts=True, unique_fields=_upsert_target(),
        update_fields=["consecutive_failures", "trips", "paused_until", "deferred_until",
                       "last_error", "updated_at", "failing_since", "unavailable_since"],
    )
    for until, hosts in waits.items():
        defer_backlog(hosts, until, keep=probes, now=now)
    if retired or revived:
        forget_unavailable()
    return opened, retired


def _bring_back(hosts: Iterable[str], now: datetime) -> None:
    """Hosts that answered (a 404 is an answer): their backlog, if it waits for their
    answer, and their failure streak ends; one that was unavailable is available again.
    One ``SELECT`` when none of them is troubled."""
    rows = list(Host.objects.filter(host__in=list(hosts)).filter(
        Q(deferred_until__gt=now) | Q(failing_since__isnull=False)
        | Q(unavailable_since__isnull=False, unavailable_by=""))
        .values_list("host", "deferred_until", "unavailable_since", "unavailable_by"))
    if not rows:
        return
    revived = [h for h, _, since, by in rows if since is not None and not by]
    if revived:
        close_circuits(revived, now=now, keep_stopped=True)
    waiting = [(h, d) for h, d, _, _ in rows if d is not None and d > now and h not in revived]
    if waiting:
        undefer(waiting, now=now)
    Host.objects.filter(host__in=[h for h, _, _, _ in rows if h not in revived]).update(
        deferred_until=None, failing_since=None)


def tripped_hosts(threshold: int) -> tuple[set[str], set[str]]:
    """Hosts whose circuit opened and has not closed since (paused, or half-open), and
    hosts that are unavailable.

    Paused ones are skipped by :func:`claim`; for the others the worker lets one
    probe through at a time. Listing them while still paused means a worker that
    caches this set never mistakes a host whose pause just ended for a healthy one.
    Unavailable hosts are never claimed, so they are listed apart: not on probation.
    """
    tripped: set[str] = set()
    unavailable: set[str] = set()
    for host, since in Host.objects.filter(
            Q(consecutive_failures__gte=threshold) | Q(unavailable_since__isnull=False)
    ).values_list("host", "unavailable_since"):
        (tripped if since is None else unavailable).add(host)
    return tripped, unavailable


# -- unavailable hosts ------------------------------------------------------------------

_unavailable: tuple[float, frozenset[str]] = (float("-inf"), frozenset())


def forget_unavailable() -> None:
    """This process's list of unavailable hosts is read again at the next :func:`unavailable`."""
    global _unavailable
    _unavailable = (float("-inf"), frozenset())


def unavailable(hosts: Sequence[str], using: str) -> dict[str, str]:
    """Which of ``hosts`` are unavailable, with the reason their deliveries fail.

    For ``enqueue()``: the names of unavailable hosts are read once every
    :data:`UNAVAILABLE_TTL` seconds per process, so most calls cost no query; a name
    found there is checked in the database before a delivery is failed for it, so a host
    available again is never refused. A host that became unavailable since the last read
    still has its rows queued for a while: workers :func:`retire` them.
    """
    global _unavailable
    read_at, names = _unavailable
    clock = time.monotonic()
    if clock - read_at > UNAVAILABLE_TTL:
        names = frozenset(Host.objects.using(using).filter(unavailable_since__isnull=False)
                          .values_list("host", flat=True))
        _unavailable = (clock, names)
    suspects = [h for h in hosts if h in names]
    if not suspects:
        return {}
    return {h.host: h.unavailable_reason for h in
            Host.objects.using(using).filter(host__in=suspects, unavailable_since__isnull=False)}


def mark_unavailable(hosts: Iterable[str], *, by: str, now: datetime | None = None) -> list[str]:
    """Stop deliveries to ``hosts`` by hand (an operator: ``by``); returns those newly
    stopped. They are not probed: only resuming them (:func:`close_circuits`) starts
    deliveries again. Their queued rows are left to :func:`retire`."""
    now = now or timezone.now()
    names = sorted(set(hosts))
    known = {h.host: h for h in Host.objects.filter(host__in=names)}
    stopped = [name for name in names if not (known.get(name) and known[name].unavailable_by)]
    rows = []
    for name in stopped:
        health = known.get(name) or Host(host=name)
        health.unavailable_since = now
        health.unavailable_by = by[:150] or "an operator"
        health.updated_at = now
        rows.append(health)
    Host.objects.bulk_create(rows, update_conflicts=True, unique_fields=_upsert_target(),
                             update_fields=["unavailable_since", "unavailable_by", "updated_at"])
    forget_unavailable()
    return stopped


def take_probes(now: datetime | None = None, limit: int = 32) -> list[str]:
    """Unavailable hosts whose probe is due (``paused_until`` passed), each taken by one
    worker: its next probe moves :data:`PROBE_EVERY` on as it is taken. Hosts an
    operator stopped are never probed."""
    now = now or timezone.now()
    due = list(Host.objects.filter(unavailable_since__isnull=False, unavailable_by="")
               .filter(Q(paused_until__isnull=True) | Q(paused_until__lte=now))
               .order_by("paused_until").values_list("host", "paused_until")[:limit])
    nxt = now + timedelta(seconds=PROBE_EVERY)
    return [host for host, was in due
            if Host.objects.filter(host=host, paused_until=was).update(paused_until=nxt)]


def probe_failed(host: str, error: str, now: datetime | None = None) -> None:
    Host.objects.filter(host=host).update(last_error=f"probe: {error}"[:500],
                                          updated_at=now or timezone.now())


def retiring(now: datetime | None = None) -> list[str]:
    """Unavailable hosts with queued rows nobody holds (one query)."""
    now = now or timezone.now()
    free = ScheduledActivity.objects.filter(
        Q(leased_until__isnull=True) | Q(leased_until__lt=now), host=OuterRef("host"))
    return list(Host.objects.filter(Exists(free), unavailable_since__isnull=False)
                .values_list("host", flat=True))


@dataclass(frozen=True, slots=True)
class Retired:
    host: str
    failing_since: datetime | None
    #: Queued rows that ended as final failures.
    failed: int


def retire(hosts: Iterable[str], *, limit: int = 5_000, now: datetime | None = None
           ) -> list[Retired]:
    """End the queued rows nobody holds of unavailable ``hosts`` as final failures, logged
    with the reason (``host unavailable: failing since …``); returns the rows ended per host.

    No attempt is made and no per-row alert or signal is sent: the host's becoming
    unavailable is reported once. Up to ``limit`` rows per host per call, in chunks of
    one short transaction each (rows held by a worker are resolved by it, then retired
    by a later call). A host available again by now is skipped.
    """
    now = now or timezone.now()
    health = Host.objects.filter(host__in=list(hosts), unavailable_since__isnull=False)
    connection = connections[alias()]
    ended: list[Retired] = []
    for row in sorted(health, key=lambda h: h.host):
        host, reason, done = row.host, row.unavailable_reason, 0
        while done < limit:
            size = min(CHUNK - 10, limit - done)
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    counts = _retire_pg(cursor, host, reason, size, now)
                elif mysql(connection):
                    counts = _retire_mysql(cursor, connection, host, reason, size, now)
                else:
                    counts = _retire_sqlite(cursor, connection, host, reason, size, now)
            retried, total = counts
            lifecycle.move(State.RETRYING, State.FAILED, retried)
            lifecycle.move(State.PENDING, State.FAILED, total - retried)
            done += total
            if total < size:
                break
        ended.append(Retired(host, row.failing_since, done))
    return ended


#: The log row of a retired delivery: its last status and error, after the reason.
_RETIRED_COLUMNS = """m.activity_id, m.activity_type, m.object_id, q.inbox, q.host,
    q.payload_id, %s, %s, q.last_status,
    CASE WHEN q.last_error = '' THEN CAST(%s AS text)
         ELSE CAST(%s AS text) || '; last error: ' || q.last_error END,
    '', q.attempts, m.created_at, %s, NULL"""
#: The same, for MySQL and MariaDB, where ``||`` is a logical OR.
_RETIRED_COLUMNS_MYSQL = """m.activity_id, m.activity_type, m.object_id, q.inbox, q.host,
    q.payload_id, %s, %s, q.last_status,
    CASE WHEN q.last_error = '' THEN %s ELSE CONCAT(%s, '; last error: ', q.last_error) END,
    '', q.attempts, m.created_at, %s, NULL"""


def _retire_pg(cursor, host: str, reason: str, size: int, now: datetime) -> tuple[int, int]:
    table = ScheduledActivity._meta.db_table
    log = Activity._meta.db_table
    cursor.execute(
        f"""
        WITH picked AS (
            SELECT id FROM {table} WHERE host = %s
              AND (leased_until IS NULL OR leased_until < %s)
            LIMIT %s FOR UPDATE SKIP LOCKED
        ), gone AS (
            DELETE FROM {table} s USING picked WHERE s.id = picked.id RETURNING s.*
        ), logged AS (
            INSERT INTO {log} ({LOG_COLUMNS}) SELECT {_RETIRED_COLUMNS}
            FROM gone q JOIN {Payload._meta.db_table} m ON m.id = q.payload_id
        )
        SELECT count(*) FILTER (WHERE attempts > 0), count(*) FROM gone
        """,
        [host, now, size, Activity.Direction.OUTBOUND.value, State.FAILED.value, reason,
         reason, now],
    )
    retried, total = cursor.fetchone()
    return retried, total


def _retire_mysql(cursor, connection, host: str, reason: str, size: int, now: datetime
                  ) -> tuple[int, int]:
    """Lock the rows (passing over those a worker is claiming), copy them to the log and
    delete them, by id."""
    table = ScheduledActivity._meta.db_table
    stamp = dt(connection, now)
    cursor.execute(
        f"SELECT id, attempts FROM {table} WHERE host = %s"
        f" AND (leased_until IS NULL OR leased_until < %s) LIMIT %s FOR UPDATE SKIP LOCKED",
        [host, stamp, size])
    return _log_and_delete(cursor, cursor.fetchall(), _RETIRED_COLUMNS_MYSQL, reason, stamp)


def _retire_sqlite(cursor, connection, host: str, reason: str, size: int, now: datetime
                   ) -> tuple[int, int]:
    """Mark the rows first (a write, so the statement takes the write lock up front), then
    copy them to the log and delete them, by id."""
    table = ScheduledActivity._meta.db_table
    stamp = dt(connection, now)
    token = f"retire:{uuid.uuid4().hex}"
    cursor.execute(
        f"UPDATE {table} SET leased_by = %s, leased_until = %s WHERE id IN ("
        f"SELECT id FROM {table}{_host_range(connection)} WHERE host = %s"
        f" AND (leased_until IS NULL OR leased_until < %s) LIMIT %s) RETURNING id, attempts",
        [token, dt(connection, now + timedelta(hours=1)), host, stamp, size])
    return _log_and_delete(cursor, cursor.fetchall(), _RETIRED_COLUMNS, reason, stamp)


def _log_and_delete(cursor, rows: list[tuple], columns: str, reason: str, stamp
                    ) -> tuple[int, int]:
    """Copy the rows ``(id, attempts)`` taken by a retire to the log as failed, then delete
    them, by id; (rows that had been tried, rows)."""
    if not rows:
        return 0, 0
    table = ScheduledActivity._meta.db_table
    ids = [r[0] for r in rows]
    where = f"id IN ({placeholders(len(ids))})"
    cursor.execute(
        f"INSERT INTO {Activity._meta.db_table} ({LOG_COLUMNS}) SELECT {columns} FROM {table} q"
        f" JOIN {Payload._meta.db_table} m ON m.id = q.payload_id WHERE q.{where}",
        [Activity.Direction.OUTBOUND.value, State.FAILED.value, reason, reason, stamp, *ids])
    cursor.execute(f"DELETE FROM {table} WHERE {where}", ids)
    return sum(1 for r in rows if r[1]), len(rows)



#: Hosts on probation read in one claim at most: the claim has one subquery for each.
PROBATION_PER_CLAIM = 32
#: Slots a host gets in the transport before it has answered anything.
FIRST_WINDOW = 2
#: Seconds between two reads of the circuits that opened (:func:`tripped_hosts`).
TRIPPED_EVERY = 1.0
#: Seconds between two reads of the signature schemes hosts accept (other workers' lessons).
SCHEMES_EVERY = 10.0


class HostBook:
    """One worker's view of the hosts it sends to, shared with its transport.

    The worker's thread owns everything but :attr:`window`, which only the
    transport's event loop touches; :attr:`paused` is written by the worker and
    read by the loop (a set's membership test is atomic).
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        #: Rows this worker holds (claimed, not yet resolved), per host.
        self.held: dict[str, int] = {}
        #: Hosts whose last answer was a timeout or a connection failure: few rows held.
        self.faulty: set[str] = set()
        #: Hosts that have answered this worker: a long line of rows may be held for them.
        self.answering: set[str] = set()
        #: Hosts whose circuit opened and has not closed since (paused, or half-open).
        self.tripped: set[str] = set()
        #: Hosts that are unavailable: never claimed, their rows retired, probed.
        self.unavailable: set[str] = set()
        #: Half-open hosts whose one probe is in flight.
        self.probing: set[str] = set()
        #: Hosts the transport holds nothing for: what reaches it comes back unattempted.
        self.paused: set[str] = set()
        #: Hosts paused since the last claim, whose backlog the next claim moves aside.
        self.just_paused: set[str] = set()
        #: Requests the transport may have in flight to each host (the loop's own).
        self.window: dict[str, int] = {}
        #: The signature scheme each host accepts, when it refused the other one: read from
        #: the hosts' rows, and set by the transport's loop as soon as it learns one.
        self.schemes: dict[str, str] = {}
        #: Claiming while deliveries are in flight (the pipelined loops).
        self.pipelined = False
        self._schemes_read = float("-inf")
        self._tripped_read = 0.0
        self._probation_turn = 0

    # -- how many rows to hold -----------------------------------------------------

    @property
    def backlog(self) -> int:
        """Rows held for one host at most: its PER_HOST in flight and a line behind them.

        At least a quarter of a batch, so that a claim is worth its scan: with
        4 * PER_HOST a backlog on few hosts was claimed some 16 rows at a time,
        and claiming took over half the worker's CPU (bench/profile.py).
        """
        return max(4 * self.config.PER_HOST, self.config.BATCH_SIZE // 4)

    def cap(self, host: str) -> int:
        """Rows held for one host: a long line for a host that answers, PER_HOST for one
        that times out, so that a dead host ties up few rows.

        In the pipelined loops, a host that has not answered yet gets PER_HOST too, so
        that a dead host takes few rows even before its first timeout. A claim may
        bring more rows of a host not held yet (its SQL cap is per claim, and listing
        every known host in it would cost more); the surplus goes back at once.
        ``run_once`` waits for all it claimed anyway, so it takes the line at once.
        """
        if host in self.faulty or (self.pipelined and host not in self.answering):
            return self.config.PER_HOST
        return self.backlog

    def stalled(self, limit: int) -> int:
        """Rows held for hosts that do not answer, up to ``limit``: the claims leave them
        out of the pipeline they keep full, or two dead hosts' rows would keep room for a
        whole batch from ever opening while healthy deliveries run."""
        per_host = self.config.PER_HOST
        return min(sum(n for host, n in self.held.items() if self.cap(host) == per_host), limit)

    # -- claiming --------------------------------------------------------------------

    def refresh_tripped(self, force: bool = False) -> None:
        """Read which circuits are open or half-open, and which hosts are unavailable, at
        most every TRIPPED_EVERY seconds."""
        now = time.monotonic()
        if force or now - self._tripped_read > TRIPPED_EVERY:
            self.tripped, self.unavailable = tripped_hosts(self.config.CIRCUIT_THRESHOLD)
            self._tripped_read = now
        if force or now - self._schemes_read > SCHEMES_EVERY:
            self.schemes = signature_schemes()
            self._schemes_read = now

    def claim_limits(self) -> tuple[set[str], dict[str, int], dict[str, int]]:
        """``(hosts to skip, room left per held host, rows per host on probation)`` for
        :func:`queue.claim <activity_queue.sending.queue.claim>`.

        Hosts that time out, and half-open circuits (one probe), are claimed from a
        window of their own: their backlog would fill the main one. Beyond
        PROBATION_PER_CLAIM of them, the others take turns over the next claims.
        """
        full = {h for h, n in self.held.items() if n >= self.cap(h)} | self.probing
        room = {h: self.cap(h) - n for h, n in self.held.items() if n < self.cap(h)}
        probation = {h: self.config.PER_HOST - self.held.get(h, 0) for h in self.faulty
                     if h not in full}
        probation.update((h, 1) for h in self.tripped if h not in full)
        if len(probation) > PROBATION_PER_CLAIM:
            turn = sorted(probation)
            start = self._probation_turn % len(turn)
            waiting = (turn[start:] + turn[:start])[PROBATION_PER_CLAIM:]
            full |= set(waiting)
            for host in waiting:
                del probation[host]
            self._probation_turn = start + PROBATION_PER_CLAIM
        return full, room, probation

    def admit(self, job: Job) -> bool:
        """Count a claimed row as held, or say it is surplus (its host is at its cap, or
        a half-open host already has its probe in flight)."""
        held = self.held.get(job.host, 0)
        if job.host in self.tripped:
            if job.host in self.probing:
                return False
            self.probing.add(job.host)
        elif held >= self.cap(job.host):
            return False
        self.held[job.host] = held + 1
        return True

    def resume(self, hosts: Iterable[str]) -> None:
        """The database let rows of these paused hosts through: their pause is over."""
        self.paused.difference_update(hosts)

    def release(self, job: Job) -> None:
        """A held row is resolved or handed back."""
        left = self.held.get(job.host, 1) - 1
        if left > 0:
            self.held[job.host] = left
        else:
            self.held.pop(job.host, None)
        self.probing.discard(job.host)

    # -- what the answers say ------------------------------------------------------------

    def observe(self, outcomes: Iterable[Outcome]) -> set[str]:
        """Note which hosts answer and which do not; returns the hosts that just stopped
        answering (the transport hands back what waits for them)."""
        faulty: set[str] = set()
        for o in outcomes:
            host = o.job.host
            if o.host_fault:
                faulty.add(host)
                self.answering.discard(host)
            elif o.state is State.SENT or o.status_code is not None:
                if o.state is State.SENT:
                    faulty.discard(host)
                    self.faulty.discard(host)
                self.answering.add(host)
        new = faulty - self.faulty
        # Bounded: every claim lists the faulty hosts (a few parameters each).
        if len(self.faulty) > 2_000:
            self.faulty.clear()
        if len(self.answering) > 10_000:
            self.answering.clear()
        self.faulty |= faulty
        return new

    def written(self, outcomes: Iterable[Outcome], opened: Iterable[str]) -> set[str]:
        """Outcomes are in the database: a success closes a circuit, ``opened`` were paused
        (after the successes: a batch can close a circuit, then open it again). Returns
        the hosts whose circuit had opened and that a success just closed: they recovered."""
        recovered: set[str] = set()
        for o in outcomes:
            if o.state is State.SENT and o.job.host in self.tripped:
                self.tripped.discard(o.job.host)
                recovered.add(o.job.host)
        opened = set(opened)
        self.paused |= opened
        self.just_paused |= opened
        self.tripped |= opened
        return recovered

    # -- the transport's window (its event loop only) ---------------------------------

    def slots(self, host: str) -> int:
        window = self.window.get(host)
        if window is None:
            window = self.window[host] = min(FIRST_WINDOW, self.config.PER_HOST)
        return window

    def adjust_window(self, outcome: Outcome, busy: Callable[[], Iterable[str]]) -> None:
        """Open the host's window on an answer, halve it on a fault; ``busy()`` gives the
        hosts with requests queued or in flight, kept when the table is trimmed."""
        host = outcome.job.host
        window = self.slots(host)
        if outcome.host_fault:
            self.window[host] = max(1, window // 2)
        elif window < self.config.PER_HOST:
            self.window[host] = min(self.config.PER_HOST, window * 2)
        if len(self.window) > 10_000:  # forget hosts with nothing going on
            keep = set(busy())
            self.window = {h: w for h, w in self.window.items() if h in keep}
