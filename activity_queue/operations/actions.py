"""What an operator can do to deliveries: re-queue, retry now, discard, stop or resume a
host.

The admin actions and the management commands both call these functions, so
that a rule (never queue a duplicate, never touch a row in flight) holds
whichever way an operator acts. Each function works in chunks, each chunk in
its own short transaction, and reports what it did and what it skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from django.db import router, transaction
from django.db.models import Q
from django.utils import timezone

from .. import lifecycle, signals
from ..exceptions import InvalidActivity
from ..lifecycle import State
from ..models import Activity, Host, Payload, ScheduledActivity
from ..sending import backends
from ..sending import hosts as host_health
from ..sending.outbox import enqueue

CHUNK = 500

#: Log rows that may go back to the queue: final failures, and rows an operator discarded.
REQUEUEABLE = frozenset({State.FAILED, State.DISCARDED})


def _chunks(items: Sequence, size: int = CHUNK) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _alias() -> str:
    return router.db_for_write(ScheduledActivity)


def _not_leased(now) -> Q:
    return Q(leased_until__isnull=True) | Q(leased_until__lt=now)


@dataclass
class RequeueResult:
    """What :func:`requeue` did with each log row it was given."""

    requeued: list[ScheduledActivity] = field(default_factory=list)
    #: The same activity is already waiting for the same inbox.
    pending: int = 0
    #: A later log row exists for the same activity and inbox: that one is the current outcome.
    superseded: int = 0
    #: Not an outbound failure (sent, received, dropped…), or its stored payload is unusable.
    ineligible: int = 0
    #: Log rows found (ids that no longer exist count as ineligible).
    seen: int = 0

    @property
    def skipped(self) -> int:
        return self.pending + self.superseded + self.ineligible

    def add(self, other: RequeueResult) -> None:
        self.requeued += other.requeued
        self.pending += other.pending
        self.superseded += other.superseded
        self.ineligible += other.ineligible
        self.seen += other.seen


def requeue(ids: Iterable[int], *, dry_run: bool = False) -> RequeueResult:
    """Schedule each failed (or discarded) delivery again, through :func:`enqueue`.

    ``ids`` are primary keys of ``Activity`` log rows. Only the latest log row
    of an (activity id, inbox) pair is re-queued, and only when nothing for
    that pair is still pending, so running a replay twice or selecting a row
    that was already re-queued never sends twice. With ``dry_run`` the same
    decisions are made and nothing is written; ``requeued`` then holds unsaved
    rows describing what would be queued.
    """
    result = RequeueResult()
    ids = list(ids)
    for chunk in _chunks(ids):
        rows = list(Activity.objects.filter(pk__in=chunk).select_related("payload")
                    .order_by("pk"))
        with transaction.atomic(using=_alias()):
            result.add(_requeue_chunk(rows, dry_run))
    result.ineligible += len(ids) - result.seen
    return result


def _requeue_chunk(rows: Sequence[Activity], dry_run: bool) -> RequeueResult:
    result = RequeueResult(seen=len(rows))
    eligible = [r for r in rows if r.direction == Activity.Direction.OUTBOUND
                and r.status in REQUEUEABLE and r.inbox and r.payload.document]
    result.ineligible = len(rows) - len(eligible)
    ids = {r.activity_id for r in eligible}
    pending = set(
        ScheduledActivity.objects.filter(payload__activity_id__in=ids)
        .values_list("payload__activity_id", "inbox")
    )
    latest: dict[tuple[str, str], tuple] = {}
    for activity_id, inbox, resolved_at, pk in (
        Activity.objects.outbound().filter(activity_id__in=ids)
        .values_list("activity_id", "inbox", "resolved_at", "pk")
    ):
        key = (activity_id, inbox)
        latest[key] = max(latest.get(key, (resolved_at, pk)), (resolved_at, pk))
    for row in eligible:
        key = (row.activity_id, row.inbox)
        if key in pending:
            result.pending += 1
        elif latest.get(key, (None, row.pk))[1] != row.pk:
            result.superseded += 1
        else:
            pending.add(key)
            made = _enqueue_again(row, dry_run)
            if made is None:
                result.ineligible += 1
            else:
                result.requeued.append(made)
    return result


def _enqueue_again(row: Activity, dry_run: bool) -> ScheduledActivity | None:
    payload = dict(row.payload.document)
    if not payload.get("id") and row.activity_id:
        payload["id"] = row.activity_id
    if dry_run:
        return ScheduledActivity(inbox=row.inbox, host=row.host, payload=Payload(
            activity_id=row.activity_id, activity_type=row.activity_type,
            object_id=row.object_id, body=row.payload.body, created_at=row.created_at))
    try:
        made = enqueue(payload, to=row.inbox, using=_alias())
    except InvalidActivity:
        return None
    return made[0] if made else None


@dataclass
class RetryResult:
    scheduled: int = 0
    #: Leased by a worker (being delivered now) or already gone from the queue.
    skipped: int = 0
    #: Hosts of the selected rows whose circuit is open: those rows still wait for it.
    paused_hosts: list[str] = field(default_factory=list)


def retry_now(ids: Iterable[int]) -> RetryResult:
    """Make the given scheduled rows due now and wake the worker.

    Rows a worker holds are left alone (their delivery is under way), and the
    attempt count is kept: a retry now is one more attempt, not a fresh start.
    """
    ids = list(ids)
    now = timezone.now()
    result = RetryResult()
    using = _alias()
    with transaction.atomic(using=using):
        for chunk in _chunks(ids):
            result.scheduled += (ScheduledActivity.objects.filter(id__in=chunk)
                                 .filter(_not_leased(now)).update(next_attempt_at=now))
        if result.scheduled:
            transaction.on_commit(partial(backends.wake, using), using=using)
    result.skipped = len(ids) - result.scheduled
    hosts = set()
    for chunk in _chunks(ids):
        hosts |= set(ScheduledActivity.objects.filter(id__in=chunk).values_list("host", flat=True))
    result.paused_hosts = sorted(
        Host.objects.filter(host__in=hosts, paused_until__gt=now).values_list("host", flat=True)
    )
    return result


@dataclass
class DiscardResult:
    discarded: list[Activity] = field(default_factory=list)
    #: Leased by a worker (being delivered now) or already gone from the queue.
    skipped: int = 0


def discard(ids: Iterable[int], *, by: str = "") -> DiscardResult:
    """Take scheduled rows out of the queue, leaving a ``discarded`` log row for each.

    The rows are first marked with a lease of our own in a single UPDATE that
    skips rows a worker holds; only marked rows are logged and deleted, in the
    same transaction, so a worker can never deliver a row that is being
    discarded. ``signals.activity_discarded`` is sent once the transaction commits.
    """
    ids = list(ids)
    result = DiscardResult()
    using = _alias()
    who = by or "an operator"
    for chunk in _chunks(ids):
        now = timezone.now()
        token = f"discard:{uuid.uuid4().hex}"
        with transaction.atomic(using=using):
            ScheduledActivity.objects.filter(id__in=chunk).filter(_not_leased(now)).update(
                leased_by=token, leased_until=now + timedelta(hours=1))
            mine = ScheduledActivity.objects.filter(id__in=chunk, leased_by=token)
            marked = list(mine.select_related("payload"))
            for row in marked:
                lifecycle.move(lifecycle.waiting_state(row.attempts), State.DISCARDED)
            logged = Activity.objects.bulk_create([
                Activity(
                    activity_id=row.activity_id, activity_type=row.activity_type,
                    object_id=row.object_id, inbox=row.inbox, host=row.host,
                    payload=row.payload, direction=Activity.Direction.OUTBOUND,
                    status=State.DISCARDED, status_code=row.last_status,
                    error=f"discarded by {who}"
                          + (f"; last error: {row.last_error}" if row.last_error else ""),
                    attempts=row.attempts, created_at=row.created_at, resolved_at=now,
                )
                for row in marked
            ])
            mine.delete()
            if logged:
                transaction.on_commit(
                    partial(signals.activity_discarded.send, sender=Activity,
                            activities=logged, by=who),
                    using=using,
                )
        result.discarded += logged
    result.skipped = len(ids) - len(result.discarded)
    return result


@dataclass
class StopResult:
    #: Hosts newly stopped (those already stopped by hand are left as they were).
    stopped: list[str] = field(default_factory=list)
    #: Queued deliveries that ended as failures, logged with the reason.
    failed: int = 0


def stop_hosts(hosts: Iterable[str], *, by: str = "") -> StopResult:
    """Stop deliveries to the given hosts now: they are unavailable until resumed
    (:func:`resume_hosts`), and never probed meanwhile.

    Their queued deliveries end as failures logged ``host unavailable: delivery
    stopped by <who> …`` (rows a worker holds end once it has written them back), and
    ``enqueue()`` logs new ones as failed at once. Re-queue them from the log once the
    host is resumed.
    """
    names = [h for h in dict.fromkeys(hosts) if h]
    stopped = host_health.mark_unavailable(names, by=by or "an operator")
    retired = host_health.retire(names, limit=10**9)
    return StopResult(stopped=stopped, failed=sum(r.failed for r in retired))


def resume_hosts(hosts: Iterable[str]) -> int:
    """Close the circuit of the given hosts now, and make them available again if they
    were unavailable (failing too long, or stopped by hand); their waiting rows become
    claimable.

    A host's health row only exists while it is troubled (a success deletes
    it), so closing the circuit is deleting the row. Rows the worker moved
    aside to wait for the host (:func:`activity_queue.sending.hosts.defer_paused`,
    :func:`activity_queue.sending.hosts.defer_backlog`) become due now; retries keep
    their own time.
    """
    using = _alias()
    with transaction.atomic(using=using):
        removed = host_health.close_circuits(hosts)
        if removed:
            transaction.on_commit(partial(backends.wake, using), using=using)
    return removed


def pause_hosts(hosts: Iterable[str], seconds: float, *, now=None) -> list[str]:
    """Pause deliveries to the given hosts by hand for ``seconds``, as an open circuit does:
    nothing is claimed for them until then, and their due rows wait for the end of the
    pause; deliveries already in flight finish. A pause already longer is kept. Returns the
    hosts now paused.

    Like a circuit that opened, the pause ends early if a delivery that was in flight
    succeeds, or when an operator resumes the host (:func:`resume_hosts`).
    """
    now = now or timezone.now()
    until = now + timedelta(seconds=seconds)
    names = [h for h in dict.fromkeys(hosts) if h]
    with transaction.atomic(using=_alias()):
        known = set(Host.objects.filter(host__in=names).values_list("host", flat=True))
        Host.objects.filter(host__in=known).filter(
            Q(paused_until__isnull=True) | Q(paused_until__lt=until)
        ).update(paused_until=until, updated_at=now)
        Host.objects.bulk_create([Host(host=h, paused_until=until, updated_at=now)
                                  for h in names if h not in known], ignore_conflicts=True)
    return names
