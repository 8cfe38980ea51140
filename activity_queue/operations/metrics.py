"""Prometheus metrics (the optional ``activity_queue[metrics]`` extra).

Two kinds, because they come from two places:

- the queue's state (depth, due, lag, in flight, hosts by circuit state) is read
  from the database at scrape time by :class:`QueueCollector`, so every process
  that serves ``/metrics`` tells the same truth, whichever process delivers. The
  reads are those of ``activity_status`` (bounded, through indexes) and are kept
  for ``CACHE_SECONDS``, so frequent scrapes from several Prometheus servers do
  not multiply queries;
- what deliveries did (outcomes, durations) is counted where the worker runs,
  from the ``outcomes_written`` signal: the in-process worker's counts appear on
  the site's own ``/metrics``; a dedicated worker serves its own
  (``activity_worker --metrics-port``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.db import connections
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import signals
from ..lifecycle import State
from .stats import host_counts, queue_stats

#: Seconds a reading of the queue's state is served again before the database is asked.
CACHE_SECONDS = 5.0

DELIVERIES = Counter(
    "activity_queue_deliveries", "Delivery attempts by what became of them "
    "(sent, retrying, failed finally, or handed back unattempted), counted by this "
    "process's worker.", ["outcome"], registry=None)
DURATION = Histogram(
    "activity_queue_delivery_duration_seconds", "Time from sending a delivery's request to "
    "its answer (or its error), in this process's worker.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0), registry=None)

_OUTCOME_LABELS = {State.SENT: "sent", State.RETRYING: "retrying", State.FAILED: "failed",
                   State.PENDING: "handed_back"}


class QueueCollector(Collector):
    """The queue's state as gauges, read from the database at most every ``CACHE_SECONDS``."""

    def __init__(self, cache_seconds: float = CACHE_SECONDS) -> None:
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._families: list[GaugeMetricFamily] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if time.monotonic() - self._read_at >= self.cache_seconds:
                self._families = self._read()
                self._read_at = time.monotonic()
            families = self._families
        yield from families

    def describe(self) -> list:
        """Nothing at registration: describing would query the database at start-up."""
        return []

    def _read(self) -> list[GaugeMetricFamily]:
        stats = queue_stats()
        hosts = host_counts()
        return [
            _gauge("activity_queue_depth", "Deliveries queued (due, retrying later, paused or "
                   "in flight).", stats.depth),
            _gauge("activity_queue_due", "Queued deliveries a worker could take now (due, "
                   "host not paused).", stats.claimable_due),
            _gauge("activity_queue_waiting_for_hosts", "Queued deliveries held back by a "
                   "paused or failing host.",
                   stats.waiting_for_paused + stats.waiting_for_failing),
            _gauge("activity_queue_in_flight", "Deliveries leased by a worker.",
                   stats.in_flight),
            _gauge("activity_queue_oldest_pending_age_seconds", "Age of the oldest queued "
                   "delivery (0 when the queue is empty).", stats.oldest_pending_age or 0.0),
            _gauge("activity_queue_lag_seconds", "How long the most overdue delivery a worker "
                   "could take has waited past its due time.", stats.lag),
            _hosts_gauge(hosts),
        ]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _hosts_gauge(counts: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "activity_queue_hosts", "Hosts by delivery state: circuit open (paused), half-open "
        "(probing) or unavailable (failing for longer than UNAVAILABLE_AFTER).",
        labels=["state"])
    for state in ("open", "half-open", "unavailable"):
        family.add_metric([state], counts["paused" if state == "open" else state])
    return family


def _count(sender, outcomes, **kwargs) -> None:
    for outcome in outcomes:
        DELIVERIES.labels(_OUTCOME_LABELS.get(outcome.state, outcome.state.value)).inc()
        if outcome.duration_ms is not None:
            DURATION.observe(outcome.duration_ms / 1000)


_registered: set[int] = set()
_registered_lock = threading.Lock()


def register(registry: CollectorRegistry = REGISTRY) -> None:
    """Expose the metrics through ``registry`` (Prometheus's default one unless told), once.

    ``METRICS: True`` calls this for the default registry when the app is ready, so a site
    that serves that registry (django-prometheus, ``prometheus_client.make_wsgi_app()``)
    shows the metrics with no more code.
    """
    with _registered_lock:
        if id(registry) in _registered:
            return
        registry.register(QueueCollector())
        registry.register(DELIVERIES)
        registry.register(DURATION)
        _registered.add(id(registry))
    signals.outcomes_written.connect(_count, dispatch_uid="activity_queue.metrics")


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


def serve(addr: str, port: int, registry: CollectorRegistry = REGISTRY) -> WSGIServer:
    """Serve ``registry`` at ``http://addr:port/metrics`` from a thread, for a process that
    serves no site (``activity_worker --metrics-port``); raises OSError if it cannot listen.

    Each scrape runs in a thread of its own and closes the database connection it opened:
    left open, each would linger until the garbage collector found it.
    """
    app = make_wsgi_app(registry)

    def closing(environ, start_response):
        try:
            return app(environ, start_response)
        finally:
            connections.close_all()

    server_class = _Server
    if ":" in addr:
        server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
    server = make_server(addr, port, closing, server_class, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="activity_queue metrics",
                     daemon=True).start()
    return server
