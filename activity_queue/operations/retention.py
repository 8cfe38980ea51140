"""How long log rows are kept, and pruning them in short transactions.

Rows are deleted a batch of primary keys at a time, each batch in its own
transaction, so pruning a large backlog never holds a long lock on the log
table and the worker keeps writing while it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import router, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from ..conf import Config, get_config
from ..lifecycle import State
from ..models import Activity, Payload, ScheduledActivity


@dataclass(frozen=True)
class Policy:
    label: str
    states: tuple[State, ...]
    days: int | None

    def cutoff(self, now: datetime) -> datetime | None:
        return None if self.days is None else now - timedelta(days=self.days)


def policies(config: Config | None = None) -> list[Policy]:
    config = config or get_config()
    return [
        Policy("sent/dropped", (State.SENT, State.DROPPED), config.RETENTION_SENT_DAYS),
        Policy("failed/discarded", (State.FAILED, State.DISCARDED),
               config.RETENTION_FAILED_DAYS),
        Policy("received", (State.RECEIVED,), config.RETENTION_RECEIVED_DAYS),
    ]


def _expired(policy: Policy, now: datetime) -> Q | None:
    cutoff = policy.cutoff(now)
    return None if cutoff is None else Q(status__in=policy.states, resolved_at__lt=cutoff)


def expired(policy: Policy, now: datetime):
    condition = _expired(policy, now)
    return Activity.objects.none() if condition is None else Activity.objects.filter(condition)


def prune(policy: Policy, *, now: datetime | None = None, batch_size: int = 1000,
          on_batch: Callable[[int], None] | None = None) -> int:
    """Delete the policy's expired rows, ``batch_size`` per transaction; return how many."""
    now = now or timezone.now()
    rows = expired(policy, now)
    using = router.db_for_write(Activity)
    deleted = 0
    while True:
        ids = list(rows.values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        with transaction.atomic(using=using):
            count, _ = Activity.objects.filter(pk__in=ids).delete()
        deleted += count
        if on_batch:
            on_batch(count)


def unreferenced(*, pruned_at: datetime | None = None):
    """Payloads no queued delivery and no log row refers to any more; with ``pruned_at``,
    those that would be so once the log rows expired then are gone (what a dry run counts).
    """
    log = Activity.objects.filter(payload=OuterRef("pk"))
    if pruned_at is not None:
        for policy in policies():
            condition = _expired(policy, pruned_at)
            if condition is not None:
                log = log.exclude(condition)
    return Payload.objects.filter(
        ~Exists(ScheduledActivity.objects.filter(payload=OuterRef("pk"))), ~Exists(log))


def prune_payloads(*, batch_size: int = 1000,
                   on_batch: Callable[[int], None] | None = None) -> int:
    """Delete the payloads of pruned log rows, ``batch_size`` per transaction.

    Each batch is checked again as it is deleted, so a payload that gained a
    reference meanwhile stays.
    """
    using = router.db_for_write(Payload)
    deleted = 0
    after = 0
    while True:
        ids = list(unreferenced().filter(pk__gt=after).order_by("pk")
                   .values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        after = ids[-1]
        with transaction.atomic(using=using):
            count, _ = unreferenced().filter(pk__in=ids).delete()
        deleted += count
        if on_batch:
            on_batch(count)
