"""``manage.py activity_worker``: the dedicated, foreground worker."""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand, CommandError

from ...checks import describe, refusals
from ...sending.worker import Report, Worker


class Command(BaseCommand):
    help = "Deliver scheduled activities until stopped (SIGTERM/SIGINT), or drain them (--burst)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--burst", action="store_true",
                            help="Deliver what is due now, then exit.")
        parser.add_argument("--name", help="Lease holder name (default: host:pid:random).")
        parser.add_argument("--max-rounds", type=int, default=None,
                            help="With --burst: stop after this many claim rounds.")
        parser.add_argument("--metrics-port", type=int, default=None,
                            help="Serve Prometheus metrics (the queue's state and this "
                                 "worker's deliveries) at http://ADDR:PORT/metrics; needs "
                                 "activity_queue[metrics].")
        parser.add_argument("--metrics-addr", default="127.0.0.1",
                            help="The address --metrics-port listens on (default 127.0.0.1).")

    def handle(self, *args, burst: bool = False, name: str | None = None,
               max_rounds: int | None = None, metrics_port: int | None = None,
               metrics_addr: str = "127.0.0.1", **options) -> None:
        if refused := refusals():
            raise CommandError("the configuration is refused by the system checks, the worker "
                               f"does not start:\n{describe(refused)}")
        if max_rounds is not None and not burst:
            raise CommandError("--max-rounds only applies to --burst")
        if max_rounds is not None and max_rounds < 1:
            raise CommandError("--max-rounds must be at least 1")
        if metrics_port is not None:
            self._serve_metrics(metrics_addr, metrics_port)
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

    def _serve_metrics(self, addr: str, port: int) -> None:
        if not 0 < port < 65536:
            raise CommandError(f"--metrics-port must be between 1 and 65535, not {port}")
        try:
            import prometheus_client  # noqa: F401  (the extra, even if metrics was imported)

            from ...operations import metrics
        except ImportError as error:
            raise CommandError(f"--metrics-port needs prometheus_client ({error}); "
                               "pip install 'prometheus-client>=0.20' (the "
                               "activity_queue[metrics] extra)") from error
        metrics.register()
        try:
            metrics.serve(addr, port)
        except OSError as error:
            raise CommandError(f"--metrics-port: cannot listen on {addr}:{port} ({error})"
                               ) from error
        self.stdout.write(f"activity_worker: metrics at http://{addr}:{port}/metrics")

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
