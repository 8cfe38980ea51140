"""``manage.py activity_replay``: put final failures back in the queue."""

from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Max, Q
from django.db.models.functions import Lower

from ...lifecycle import State
from ...models import Activity
from ...operations import actions as operations
from ..options import WHEN_HELP, Progress, parse_when, positive_int


def status_code(value: str) -> int | None:
    if value.strip().lower() == "none":
        return None
    if not value.strip().isdigit() or not 100 <= int(value) <= 599:
        raise argparse.ArgumentTypeError(f"{value!r} is not an HTTP status (100-599) or 'none'")
    return int(value)


class Command(BaseCommand):
    help = ("Re-queue failed outbound deliveries. Skips any whose activity is already pending "
            "for the same inbox, and any superseded by a later attempt.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--since", type=parse_when, help=f"Failed at or after: {WHEN_HELP}.")
        parser.add_argument("--until", type=parse_when, help="Failed before this (same forms).")
        parser.add_argument("--host", action="append", default=[],
                            help="Inbox origin (https://a.example) or host name; repeatable.")
        parser.add_argument("--type", action="append", default=[], dest="types",
                            help="Activity type (Create, Update…); repeatable.")
        parser.add_argument("--status", action="append", default=[], type=status_code,
                            dest="codes", help="HTTP status of the last attempt, or 'none' "
                                               "for network errors; repeatable.")
        parser.add_argument("--id", action="append", default=[], dest="activity_ids",
                            help="Activity id (URI); repeatable.")
        parser.add_argument("--include-discarded", action="store_true",
                            help="Also re-queue deliveries an operator discarded.")
        parser.add_argument("--dry-run", action="store_true",
                            help="List what would be re-queued; change nothing.")
        parser.add_argument("--batch-size", type=positive_int, default=operations.CHUNK)

    def handle(self, *args, since=None, until=None, host=(), types=(), codes=(),
               activity_ids=(), include_discarded=False, dry_run=False,
               batch_size=operations.CHUNK, **options) -> None:
        if since and until and since >= until:
            raise CommandError(f"--since ({since.isoformat()}) must be before --until "
                               f"({until.isoformat()})")
        rows = self.select(since, until, host, types, codes, activity_ids, include_discarded)
        top = rows.aggregate(top=Max("pk"))["top"] or 0
        rows = rows.filter(pk__lte=top)
        total = rows.count()
        progress = Progress(self.stderr, total, "would re-queue" if dry_run else "re-queueing")
        result = operations.RequeueResult()
        last = 0
        while True:
            batch = list(rows.filter(pk__gt=last).order_by("pk")
                         .values_list("pk", flat=True)[:batch_size])
            if not batch:
                break
            last = batch[-1]
            done = operations.requeue(batch, dry_run=dry_run)
            if dry_run or options.get("verbosity", 1) > 1:
                for row in done.requeued:
                    self.stdout.write(f"{'would re-queue' if dry_run else 're-queued'} "
                                      f"{row.activity_type} {row.activity_id} -> {row.inbox}")
            result.add(done)
            progress.update(result.seen)
        progress.finish()
        self.stdout.write(self.summary(result, total, dry_run))

    def select(self, since, until, hosts, types, codes, activity_ids, include_discarded):
        states = [State.FAILED, State.DISCARDED] if include_discarded else [State.FAILED]
        rows = Activity.objects.outbound().filter(status__in=states)
        if since:
            rows = rows.filter(resolved_at__gte=since)
        if until:
            rows = rows.filter(resolved_at__lt=until)
        if hosts:
            rows = rows.filter(_any(_host_match(h) for h in hosts))
        if types:
            # Lower() rather than iexact, which is case-sensitive under a binary collation
            # on MySQL.
            rows = rows.annotate(kind=Lower("activity_type")).filter(
                kind__in=[t.lower() for t in types])
        if codes:
            known = [c for c in codes if c is not None]
            match = Q(status_code__in=known)
            if None in codes:
                match |= Q(status_code__isnull=True)
            rows = rows.filter(match)
        if activity_ids:
            rows = rows.filter(activity_id__in=activity_ids)
        return rows

    @staticmethod
    def summary(result: operations.RequeueResult, total: int, dry_run: bool) -> str:
        verb = "Would re-queue" if dry_run else "Re-queued"
        text = (f"{verb} {len(result.requeued)} of {total} matching failure(s); skipped "
                f"{result.pending} already pending, {result.superseded} superseded by a "
                f"later attempt, {result.ineligible} unusable.")
        return f"Dry run: {text} Nothing was changed." if dry_run else text


def _host_match(value: str) -> Q:
    value = value.strip().rstrip("/").lower()
    if "://" in value:
        return Q(host=value)
    match = Q()
    for scheme in ("https", "http"):
        match |= Q(host=f"{scheme}://{value}") | Q(host__startswith=f"{scheme}://{value}:")
    return match


def _any(conditions) -> Q:
    combined = Q()
    for condition in conditions:
        combined |= condition
    return combined
