"""The numbers operators watch: queue state, recent outcomes, failing hosts.

Shared by the admin dashboard and ``activity_status``. Every query is either
on the queue table (small when healthy, and read through its indexes when
not) or on the log within a bounded time window through an index that starts
with the column it filters on, so the page stays fast with millions of log rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Count, OuterRef, Q, Subquery
from django.utils import timezone

from ..lifecycle import State
from ..models import Activity, Host, ScheduledActivity, troubled_hosts_q


@dataclass(frozen=True)
class QueueStats:
    now: datetime
    depth: int
    due: int
    #: Due rows whose host's circuit is open: they wait for the host, not for a worker.
    due_paused: int
    #: Rows of hosts whose circuit is open that are due by the end of the pause: the due
    #: ones, and those the worker moved to the end of the pause (hosts.defer_paused).
    waiting_for_paused: int
    #: Rows of hosts that fail (timeouts, refused connections, 5xx) moved out of the claims'
    #: way until the host answers or ``Host.deferred_until`` (hosts.defer_backlog).
    waiting_for_failing: int
    in_flight: int
    #: ``created_at`` of the earliest-enqueued row still queued.
    oldest_pending: datetime | None
    #: ``next_attempt_at`` of the most overdue row a worker could take now.
    oldest_due: datetime | None

    @property
    def oldest_pending_age(self) -> float | None:
        return None if self.oldest_pending is None else _seconds(self.now - self.oldest_pending)

    @property
    def lag(self) -> float:
        """Seconds the most overdue claimable row has waited past its due time."""
        return 0.0 if self.oldest_due is None else _seconds(self.now - self.oldest_due)


def _seconds(delta: timedelta) -> float:
    return max(0.0, delta.total_seconds())


def queue_stats(now: datetime | None = None) -> QueueStats:
    now = now or timezone.now()
    queue = ScheduledActivity.objects
    # Rows of an unavailable host are not claimable either (workers end them).
    paused = Host.objects.filter(Q(paused_until__gt=now) | Q(unavailable_since__isnull=False)
                                 ).values("host")
    # A paused host's rows are counted as waiting for the pause, not twice.
    failing = (Host.objects.filter(deferred_until__gt=now).exclude(paused_until__gt=now)
               .values("host"))
    due = queue.due(now)
    # Enqueue stamps created_at as it inserts, so the lowest id is the oldest row.
    oldest = queue.order_by("id").values_list("payload__created_at", flat=True).first()
    oldest_due = (due.exclude(host__in=paused).order_by("next_attempt_at")
                  .values_list("next_attempt_at", flat=True).first())
    return QueueStats(
        now=now,
        depth=queue.count(),
        due=due.count(),
        due_paused=due.filter(host__in=paused).count(),
        waiting_for_paused=_due_by_their_hosts(paused, "paused_until").count(),
        waiting_for_failing=_due_by_their_hosts(failing, "deferred_until").filter(
            next_attempt_at__gt=now).count(),
        in_flight=queue.leased(now).count(),
        oldest_pending=oldest,
        oldest_due=oldest_due,
    )


def _due_by_their_hosts(hosts, until: str):
    """Queued rows of ``hosts`` due by the time in their host's ``until`` field."""
    return ScheduledActivity.objects.filter(host__in=hosts, next_attempt_at__lte=Subquery(
        Host.objects.filter(host=OuterRef("host")).values(until)[:1]))


@dataclass(frozen=True)
class HourBucket:
    start: datetime
    sent: int = 0
    failed: int = 0


def hourly_outcomes(hours: int = 24, now: datetime | None = None) -> list[HourBucket]:
    """Deliveries and final failures per UTC hour, oldest first, the current hour last.

    One COUNT per hour and outcome, each a range scan of the
    ``(status, resolved_at)`` index that reads no table row. Grouping by a
    truncated timestamp instead would call a function on every row of the
    day (a Python one on SQLite): measured several times slower on a busy log.
    """
    now = now or timezone.now()
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    buckets = []
    for i in range(hours):
        start = current - timedelta(hours=hours - 1 - i)
        end = min(start + timedelta(hours=1), now + timedelta(microseconds=1))
        window = Activity.objects.filter(resolved_at__gte=start, resolved_at__lt=end)
        buckets.append(HourBucket(start, window.filter(status=State.SENT).count(),
                                  window.filter(status=State.FAILED).count()))
    return buckets


@dataclass(frozen=True)
class HostFailures:
    host: str
    failures: int
    circuit: str
    paused_until: datetime | None
    last_error: str


def failing_hosts(since: datetime, limit: int = 10) -> list[HostFailures]:
    """Hosts with the most final failures since ``since``, with their circuit state."""
    top = list(
        Activity.objects.filter(status=State.FAILED, resolved_at__gte=since)
        .values_list("host").annotate(n=Count("id")).order_by("-n", "host")[:limit]
    )
    health = {h.host: h for h in Host.objects.filter(host__in=[host for host, _ in top])}
    result = []
    for host, n in top:
        state = health.get(host)
        result.append(HostFailures(
            host=host, failures=n,
            circuit=state.circuit if state else "closed",
            paused_until=state.paused_until if state else None,
            last_error=state.last_error if state else "",
        ))
    return result


def troubled_hosts() -> list[Host]:
    """Hosts whose circuit is open or half-open, or that are unavailable (a healthy host has
    no row, or one that only remembers its signature scheme)."""
    return [h for h in Host.objects.filter(troubled_hosts_q()).order_by("host")
            if h.circuit != "closed" or h.unavailable]


def count_since(status: State, since: datetime) -> int:
    return Activity.objects.filter(status=status, resolved_at__gte=since).count()
