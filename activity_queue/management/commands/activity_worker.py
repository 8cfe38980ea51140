"""``manage.py activity_worker``: the dedicated, foreground worker."""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand, CommandError

from ...sending.worker import Report, Worker


class Command(BaseCommand):
    help = "Deliver scheduled activities until stopped (SIGTERM/SIGINT), or drain them (--burst)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--burst", action="store_true",
                            help="Deliver what is due now, then exit.")
        parser.add_argument("--name", help="Lease holder name (default: host:pid:random).")
        parser.add_argument("--max-rounds", type=int, default=None,
                            help="With --burst: stop after this many claim rounds.")

    def handle(self, *args, burst: bool = False, name: str | None = None,
               max_rounds: int | None = None, **options) -> None:
        if max_rounds is not None and not burst:
            raise CommandError("--max-rounds only applies to --burst")
        if max_rounds is not None and max_rounds < 1:
            raise CommandError("--max-rounds must be at least 1")
        worker = Worker(name=name)
        if burst:
            self._burst(worker, max_rounds)
            return

        def _stop(signum, frame):
            self.stderr.write(f"activity_worker: {signal.Signals(signum).name}, stopping…")
            worker.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        self.stdout.write(f"activity_worker {worker.id} running; SIGTERM or Ctrl-C to stop.")
        self.stdout.flush()
        worker.run_forever()
        self.stdout.write("activity_worker stopped.")

    def _burst(self, worker: Worker, max_rounds: int | None) -> None:
        total = Report()
        rounds = 0
        try:
            while max_rounds is None or rounds < max_rounds:
                report = worker.run_once()
                rounds += 1
                total.add(report)
                if not report.claimed and not report.released:
                    break
        finally:
            worker._shutdown()
        self.stdout.write(
            f"activity_worker --burst: {total.sent} sent, {total.retried} to retry, "
            f"{total.failed} failed, {total.deferred} deferred, "
            f"{total.dropped} dropped as redundant, in {rounds} round(s)."
        )
