"""The numbers operators watch: queue state, recent outcomes, failing hosts.

Shared by the admin dashboard and ``activity_status``. Every query is either
on the queue table (small when healthy, and read through its indexes when
not) or on the log within a bounded time window through an index that starts
with the column it filters on, so the page stays fast with millions of log rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from ..lifecycle import State
from ..models import Activity, Host, ScheduledActivity
from ..net.addresses import origin
from ..payloads import string_problem

#: The length of the ``host`` columns.
MAX_HOST = 255


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
    def claimable_due(self) -> int:
        """Due rows a worker could take now: those of paused hosts wait for the host."""
        return max(self.due - self.due_paused, 0)

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


def delivered_later() -> Exists:
    """A later outbound log row of the same activity and inbox says it was delivered: a
    failure that an operator replayed and that went through is no longer a failure."""
    return Exists(Activity.objects.filter(
        activity_id=OuterRef("activity_id"), inbox=OuterRef("inbox"), status=State.SENT,
        direction=Activity.Direction.OUTBOUND, resolved_at__gte=OuterRef("resolved_at")))


def standing_failures(rows: QuerySet | None = None) -> QuerySet:
    """Final failures among ``rows`` (default: the whole log) not delivered since.

    The extra probe runs once per failure, through the ``activity_id`` index; failures
    are few next to deliveries, so the windows stay cheap."""
    rows = Activity.objects.all() if rows is None else rows
    return rows.filter(status=State.FAILED).exclude(delivered_later())


@dataclass(frozen=True)
class HostQueue:
    """The queued rows of some hosts, by what they wait for."""

    queued: int
    #: Due, nobody holds them, their host is not paused: a worker takes them now.
    claimable: int
    #: Held by a worker: being delivered.
    leased: int
    #: Waiting for their own retry time, their host not paused.
    backoff: int
    #: Waiting for their host's pause to end (or for it to be available again).
    paused: int
    #: When the first row in backoff is due.
    next_due: datetime | None


def host_queue(hosts: list[str], now: datetime | None = None) -> HostQueue:
    """Counts over the ``(host, next_attempt_at)`` index of the hosts' rows.

    A row of a paused host waits for the pause if it is due by its end; one due later
    waits for its own retry time (backoff), as the worker sees it.
    """
    now = now or timezone.now()
    rows = ScheduledActivity.objects.filter(host__in=hosts)
    free = rows.filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
    held = Q(pk__in=[])
    for name, until, since in Host.objects.filter(host__in=hosts).filter(
            Q(paused_until__gt=now) | Q(unavailable_since__isnull=False)
    ).values_list("host", "paused_until", "unavailable_since"):
        held |= Q(host=name) if since is not None else Q(host=name, next_attempt_at__lte=until)
    running = free.exclude(held)
    later = running.filter(next_attempt_at__gt=now)
    return HostQueue(
        queued=rows.count(),
        claimable=running.filter(next_attempt_at__lte=now).count(),
        leased=rows.leased(now).count(),
        backoff=later.count(),
        paused=free.filter(held).count(),
        next_due=later.order_by("next_attempt_at").values_list("next_attempt_at",
                                                               flat=True).first(),
    )


@dataclass(frozen=True)
class HourBucket:
    start: datetime
    sent: int = 0
    failed: int = 0


def hourly_outcomes(hours: int = 24, now: datetime | None = None) -> list[HourBucket]:
    """Deliveries and final failures (not delivered since) per UTC hour, oldest first, the
    current hour last.

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
                                  standing_failures(window).count()))
    return buckets


@dataclass(frozen=True)
class HostFailures:
    host: str
    #: Final failures in the window that were not delivered since.
    failures: int
    circuit: str
    paused_until: datetime | None
    last_error: str
    consecutive_failures: int = 0
    unavailable: bool = False


def _with_health(counts: list[tuple[str, int]], health: dict[str, Host]) -> list[HostFailures]:
    result = []
    for host, n in counts:
        state = health.get(host)
        result.append(HostFailures(
            host=host, failures=n,
            circuit=state.circuit if state else "closed",
            paused_until=state.paused_until if state and state.circuit == "open" else None,
            last_error=state.last_error if state else "",
            consecutive_failures=state.consecutive_failures if state else 0,
            unavailable=bool(state and state.unavailable),
        ))
    return result


def _failures_by_host(since: datetime, limit: int) -> list[tuple[str, int]]:
    return list(standing_failures(Activity.objects.filter(resolved_at__gte=since))
                .values_list("host").annotate(n=Count("id")).order_by("-n", "host")[:limit])


def failing_hosts(since: datetime, limit: int = 10) -> list[HostFailures]:
    """Hosts with the most final failures since ``since`` (not delivered since), with their
    circuit state."""
    top = _failures_by_host(since, limit)
    return _with_health(top, {h.host: h for h in Host.objects.filter(
        host__in=[host for host, _ in top])})


def struggling_hosts(since: datetime, limit: int = 10) -> list[HostFailures]:
    """The hosts an operator should look at first: open circuits, then the longest runs of
    failures in a row, then final failures
    since ``since``.

    Final failures alone miss a host whose deliveries are all still being retried.
    """
    health = {h.host: h for h in Host.objects.filter(consecutive_failures__gt=0)
              .order_by("-consecutive_failures", "host")[:limit]}
    health.update((h.host, h) for h in Host.objects.filter(
        Q(paused_until__gt=timezone.now()) | Q(unavailable_since__isnull=False))[:limit])
    counts = dict(_failures_by_host(since, limit))
    health.update((h.host, h) for h in Host.objects.filter(host__in=list(counts)))
    names = set(health) | set(counts)
    rows = _with_health([(h, counts.get(h, 0)) for h in names], health)
    rows.sort(key=lambda r: (r.circuit != "open", -r.consecutive_failures, -r.failures, r.host))
    return rows[:limit]


@dataclass(frozen=True)
class HostOverview:
    """One host, as its admin page shows it."""

    host: str
    health: Host | None
    queue: HostQueue
    #: Deliveries and standing final failures in the last 24 hours.
    sent_24h: int
    failed_24h: int
    #: The latest final failures (log rows), newest first.
    recent_failures: list[Activity]
    #: The last errors of its queued rows, most frequent first: ``(error, rows)``.
    queue_errors: list[tuple[str, int]]


def host_overview(host: str, now: datetime | None = None) -> HostOverview:
    """Every query reads one host's range of an index: ``(host, next_attempt_at)`` on the
    queue, ``(host, resolved_at)`` on the log."""
    now = now or timezone.now()
    day = Activity.objects.filter(host=host, resolved_at__gte=now - timedelta(hours=24))
    return HostOverview(
        host=host,
        health=Host.objects.filter(host=host).first(),
        queue=host_queue([host], now),
        sent_24h=day.filter(status=State.SENT).count(),
        failed_24h=standing_failures(day).count(),
        recent_failures=list(Activity.objects.filter(host=host, status=State.FAILED)
                             .order_by("-resolved_at")[:10]),
        queue_errors=list(ScheduledActivity.objects.filter(host=host).exclude(last_error="")
                          .values_list("last_error").annotate(n=Count("id"))
                          .order_by("-n", "last_error")[:5]),
    )


def known_host(name: str) -> str:
    """The origin an operator means by ``name``: its origin if it has a scheme, else the
    ``https://`` or ``http://`` origin of that name that the queue, the log or the host
    table knows (``https://`` when none does). ValueError when no host can have it."""
    if len(name) > MAX_HOST or string_problem(name):
        raise ValueError(f"{name[:100]!r} is no host name")
    if "://" in name:
        return origin(name)  # ValueError for a bad port
    for candidate in (f"https://{name}", f"http://{name}"):
        if (Host.objects.filter(host=candidate).exists()
                or ScheduledActivity.objects.filter(host=candidate).exists()
                or Activity.objects.filter(host=candidate).exists()):
            return candidate
    return f"https://{name}"


def _troubled(now: datetime) -> Q:
    """What :attr:`Host.circuit` and :attr:`Host.unavailable` say, as a query."""
    return Q(paused_until__gt=now) | Q(trips__gt=0) | Q(unavailable_since__isnull=False)


def troubled_hosts(limit: int | None = None) -> list[Host]:
    """Hosts whose circuit is open or half-open, or that are unavailable (healthy hosts
    have no row), by name; the first ``limit`` of them when given: unavailable hosts
    pile up on a site that federates widely."""
    rows = Host.objects.filter(_troubled(timezone.now())).order_by("host")
    return list(rows if limit is None else rows[:limit])


def host_counts(now: datetime | None = None) -> dict[str, int]:
    """Troubled hosts counted by the database: ``open`` (circuit open, available or
    not), ``half-open``, ``unavailable``, ``troubled`` (all of them), and ``paused``
    (open and available: what the metrics call open)."""
    now = now or timezone.now()
    opened, down = Q(paused_until__gt=now), Q(unavailable_since__isnull=False)
    return Host.objects.aggregate(
        open=Count("pk", filter=opened),
        paused=Count("pk", filter=opened & ~down),
        **{"half-open": Count("pk", filter=Q(trips__gt=0) & ~opened & ~down)},
        unavailable=Count("pk", filter=down),
        troubled=Count("pk", filter=_troubled(now)),
    )


def count_since(status: State, since: datetime) -> int:
    return Activity.objects.filter(status=status, resolved_at__gte=since).count()
