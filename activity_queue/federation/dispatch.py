"""From detected backlinks to scheduled deliveries, and inbox discovery in the background.

:func:`send` runs inside the caller's transaction (a model signal). It never
touches the network: targets whose inbox is cached are enqueued at once, the
others become :class:`~activity_queue.models.PendingDiscovery` rows in the
same transaction, so nothing is lost if the process dies. The worker calls
:func:`resolve_due` (in a helper thread, see :func:`poll`) to fetch the
missing documents, turn each pending row into a scheduled delivery, or
retry it later with the delivery backoff; after ``MAX_ATTEMPTS`` it is
logged as a failed ``Activity``, like a delivery that failed for good. An
inbox whose delivery ends with 410 Gone stops following anything (:func:`inbox_gone`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import requests
from django.db import close_old_connections, connection, connections, router, transaction
from django.utils import timezone

from .. import lifecycle, signals
from ..conf import get_config
from ..lifecycle import State
from ..models import Activity, Follower, Payload, PendingDiscovery
from ..net.addresses import origin
from ..sending import backends
from ..sending.alerts import report_final_failure
from ..sending.jobs import Job, Outcome
from ..sending.outbox import enqueue, new_activity_id
from ..sending.retry import backoff
from ..sending.worker import Worker
from . import discovery

logger = logging.getLogger(__name__)
failure_logger = logging.getLogger("activity_queue.failures")

#: Distinct origins fetched at once while resolving pending discoveries.
FETCH_THREADS = 4


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One activity to send: to known inboxes, and to the inboxes of external resources."""

    activity: dict[str, Any]
    object_id: str
    inboxes: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()


def send(plans: Iterable[Outgoing], using: str | None = None) -> None:
    """Enqueue each planned activity, or park it until its target's inbox is known."""
    for plan in plans:
        activity = {**plan.activity, "id": new_activity_id()}
        inboxes = list(plan.inboxes)
        waiting = []
        for resource in plan.resources:
            inbox = discovery.cached_inbox(resource)
            if inbox:
                inboxes.append(inbox)
            else:
                waiting.append(resource)
        if inboxes:
            enqueue(activity, inboxes, using=using)
            if activity["type"] != "Delete":
                follow(plan.object_id, inboxes, using=using)
        if waiting:
            db = using or router.db_for_write(PendingDiscovery)
            PendingDiscovery.objects.using(db).bulk_create([
                PendingDiscovery(resource=r, activity_type=activity["type"],
                                 object_id=plan.object_id, payload=activity)
                for r in dict.fromkeys(waiting)
            ])
            transaction.on_commit(partial(backends.wake, db), using=db)


def follow(object_id: str, inboxes: Iterable[str], using: str | None = None) -> None:
    """Remember that these inboxes were told about ``object_id``."""
    rows = [Follower(object_id=object_id, inbox=i) for i in dict.fromkeys(inboxes)]
    Follower.objects.using(using or router.db_for_write(Follower)).bulk_create(
        rows, ignore_conflicts=True
    )


def inbox_gone(sender: type, outcome: Outcome, **kwargs: Any) -> None:
    """A delivery's final answer was 410 Gone: the inbox is gone for good, so it follows
    nothing any more and later activities about those objects are not sent there.
    Connected to ``activity_failed`` from deliveries (the worker's), not from discovery,
    whose 410 is about a remote resource rather than an inbox."""
    if outcome.status_code == 410 and outcome.job.inbox:
        db = router.db_for_write(Follower)
        gone, _ = Follower.objects.using(db).filter(inbox=outcome.job.inbox).delete()
        if gone:
            logger.info("activity_queue: %s answered 410 Gone; it no longer follows %s "
                        "object(s)", outcome.job.inbox, gone)


def forget(object_id: str, using: str | None = None) -> None:
    """The object is gone: no more followers, and its undiscovered backlinks are moot."""
    db = using or router.db_for_write(Follower)
    Follower.objects.using(db).filter(object_id=object_id).delete()
    moot = list(PendingDiscovery.objects.using(db).filter(object_id=object_id))
    if not moot:
        return
    PendingDiscovery.objects.using(db).filter(pk__in=[p.pk for p in moot]).delete()
    reason = "object deleted before its target's inbox was known"
    _log(moot, State.DROPPED, error=reason, using=db)
    for p in moot:
        transaction.on_commit(partial(signals.activity_dropped.send, sender=PendingDiscovery,
                                      activity=p.payload, inbox="", reason=reason), using=db)


def _log(rows: list[PendingDiscovery], status: State, *, error: str, using: str) -> None:
    lifecycle.move(lifecycle.NEW, status, len(rows))
    now = timezone.now()
    with transaction.atomic(using=using):  # a payload is never seen without its log row
        _log_rows(rows, status, error=error, using=using, now=now)


def _log_rows(rows: list[PendingDiscovery], status: State, *, error: str, using: str,
              now) -> None:
    payloads = [Payload.of(p.payload, activity_type=p.activity_type, object_id=p.object_id,
                           created_at=p.created_at) for p in rows]
    if connections[using].features.can_return_rows_from_bulk_insert:
        Payload.objects.using(using).bulk_create(payloads)
    else:  # MySQL: a bulk insert does not tell the new ids
        for payload in payloads:
            payload.save(using=using)
    Activity.objects.using(using).bulk_create([
        Activity(activity_id=payload.activity_id, activity_type=p.activity_type,
                 object_id=p.object_id, inbox="", host=origin(p.resource), payload=payload,
                 direction=Activity.Direction.OUTBOUND, status=status, error=error,
                 attempts=p.attempts, created_at=p.created_at, resolved_at=now)
        for p, payload in zip(rows, payloads, strict=True)
    ])


# -- resolving pending discoveries ------------------------------------------------

def resolve_due(limit: int = 200, *, session: requests.Session | None = None) -> dict[str, int]:
    """Discover the inboxes of due pending rows and enqueue them; returns counts.

    Rows are claimed with a token first, so two processes never resolve the
    same row. Each origin is fetched in its own thread, its resources one
    after another, and an origin that fails transiently is not asked again in
    this round.
    """
    cfg = get_config()
    now = timezone.now()
    token = uuid.uuid4().hex
    db = router.db_for_write(PendingDiscovery)
    due = PendingDiscovery.objects.using(db).filter(next_attempt_at__lte=now)
    ids = list(due.order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    if not ids:
        return {"enqueued": 0, "retrying": 0, "failed": 0}
    due.filter(pk__in=ids).update(claimed_by=token,
                                  next_attempt_at=now + timedelta(seconds=cfg.LEASE))
    rows = list(PendingDiscovery.objects.using(db).filter(claimed_by=token))
    by_origin: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        group = by_origin[origin(row.resource)]
        if row.resource not in group:
            group.append(row.resource)
    answers: dict[str, str | discovery.DiscoveryFailed] = {}
    with ThreadPoolExecutor(min(FETCH_THREADS, len(by_origin))) as pool:
        for result in pool.map(partial(_discover_origin, session=session), by_origin.values()):
            answers.update(result)
    counts = {"enqueued": 0, "retrying": 0, "failed": 0}
    for row in rows:
        answer = answers[row.resource]
        with transaction.atomic(using=db):
            if isinstance(answer, str):
                _promote(row, answer, db)
                counts["enqueued"] += 1
            elif answer.retryable and row.attempts + 1 < cfg.MAX_ATTEMPTS:
                _postpone(row, str(answer), db)
                counts["retrying"] += 1
            else:
                _give_up(row, str(answer), db)
                counts["failed"] += 1
    return counts


def _discover_origin(resources: list[str], *, session: requests.Session | None
                     ) -> dict[str, str | discovery.DiscoveryFailed]:
    out: dict[str, str | discovery.DiscoveryFailed] = {}
    for resource in resources:
        if resource in out:
            continue
        try:
            out[resource] = discovery.inbox_for(resource, session=session)
        except discovery.DiscoveryFailed as exc:
            out[resource] = exc
            if exc.retryable:  # the origin is unwell: do not wait on it again this round
                for rest in resources:
                    out.setdefault(rest, exc)
                break
    return out


def _promote(row: PendingDiscovery, inbox: str, db: str) -> None:
    if not PendingDiscovery.objects.using(db).filter(pk=row.pk, claimed_by=row.claimed_by) \
            .delete()[0]:
        return
    enqueue(row.payload, inbox, using=db)
    if row.activity_type != "Delete":
        follow(row.object_id, [inbox], using=db)


def _postpone(row: PendingDiscovery, error: str, db: str) -> None:
    cfg = get_config()
    attempts = row.attempts + 1
    wait = backoff(attempts, cfg.BACKOFF_FACTOR, cfg.BACKOFF_MAX)
    PendingDiscovery.objects.using(db).filter(pk=row.pk, claimed_by=row.claimed_by).update(
        attempts=attempts, last_error=f"inbox discovery: {error}"[:2000], claimed_by="",
        next_attempt_at=timezone.now() + timedelta(seconds=wait),
    )


def _give_up(row: PendingDiscovery, error: str, db: str) -> None:
    if not PendingDiscovery.objects.using(db).filter(pk=row.pk, claimed_by=row.claimed_by) \
            .delete()[0]:
        return
    row.attempts += 1
    message = f"inbox discovery for {row.resource} failed: {error}"
    _log([row], State.FAILED, error=message, using=db)
    job = Job(id=row.pk, inbox=row.resource, host=origin(row.resource), body=b"",
              attempts=row.attempts, activity_type=row.activity_type,
              activity_id=str(row.payload.get("id", "")), object_id=row.object_id,
              has_predecessor=False)
    outcome = Outcome(job, State.FAILED, error=message)
    failure_logger.error("activity_queue: %s %s: %s", row.activity_type, row.object_id, message,
                         extra={"inbox_host": job.host, "status_code": None})
    transaction.on_commit(partial(_announce_failure, outcome), using=db)


def _announce_failure(outcome: Outcome) -> None:
    report_final_failure(outcome)
    signals.activity_failed.send(sender=PendingDiscovery, outcome=outcome)


# -- the worker's hook --------------------------------------------------------------

_lock = threading.Lock()
_running = False
_last_poll = 0.0


def poll(interval: float = 1.0) -> bool:
    """Start :func:`resolve_due` in a helper thread if rows are due (at most every
    ``interval`` seconds, and one helper at a time). Cheap: one indexed query.

    The worker's database thread calls this; fetching in a helper keeps a slow
    remote document from holding up deliveries.
    """
    global _running, _last_poll
    now = time.monotonic()
    with _lock:
        if _running or now - _last_poll < interval:
            return False
        _last_poll = now
    if not PendingDiscovery.objects.filter(next_attempt_at__lte=timezone.now()).exists():
        return False
    with _lock:
        if _running:
            return False
        _running = True
    threading.Thread(target=_resolve_in_thread, name="activity-queue-discovery",
                     daemon=True).start()
    return True


def _resolve_in_thread() -> None:
    global _running
    try:
        resolve_due()
    except Exception:
        logger.exception("activity_queue: resolving pending inbox discoveries failed")
    finally:
        connection.close()
        close_old_connections()
        with _lock:
            _running = False


signals.activity_failed.connect(inbox_gone, sender=Worker,
                                dispatch_uid="activity_queue.federation.dispatch.inbox_gone")
