"""``manage.py activity_prune``: delete log rows older than the retention settings."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.utils import timezone

from ...operations import retention
from ..options import positive_int


class Command(BaseCommand):
    help = ("Delete Activity log rows older than ACTIVITY_QUEUE's RETENTION_SENT_DAYS, "
            "RETENTION_FAILED_DAYS and RETENTION_RECEIVED_DAYS, and the payloads nothing "
            "refers to any more, in batches.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true",
                            help="Count what would be deleted; delete nothing.")
        parser.add_argument("--batch-size", type=positive_int, default=1000,
                            help="Rows deleted per transaction (default 1000).")

    def handle(self, *args, dry_run=False, batch_size=1000, **options) -> None:
        now = timezone.now()
        batches = 0
        parts = []
        total = 0

        def counted(n: int) -> None:
            nonlocal batches
            batches += 1
            if options.get("verbosity", 1) > 1:
                self.stdout.write(f"  deleted a batch of {n}")

        for policy in retention.policies():
            if policy.days is None:
                parts.append(f"{policy.label}: kept forever")
                continue
            if dry_run:
                n = retention.expired(policy, now).count()
            else:
                n = retention.prune(policy, now=now, batch_size=batch_size, on_batch=counted)
            total += n
            parts.append(f"{policy.label} older than {policy.days} days: {n}")
        if dry_run:
            payloads = retention.unreferenced(pruned_at=now).count()
            self.stdout.write(f"Dry run: would delete {total} log row(s) ({'; '.join(parts)}), "
                              f"and {payloads} payload(s) nothing would refer to any more. "
                              "Nothing was changed.")
        else:
            payloads = retention.prune_payloads(batch_size=batch_size)
            self.stdout.write(f"Deleted {total} log row(s) in {batches} batch(es) "
                              f"({'; '.join(parts)}), and {payloads} payload(s) nothing "
                              "refers to any more.")
