"""Prometheus metrics: scraped in the Prometheus text format, after real deliveries over
loopback HTTP, from the site's registry and from ``activity_worker --metrics-port``."""

import sys
import threading
import urllib.request
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.backends.signals import connection_created
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from activity_queue.models import ScheduledActivity  # noqa: E402
from activity_queue.operations import metrics  # noqa: E402

from ..support.helpers import aq_settings, send, wait_until  # noqa: E402
from ..support.processes import free_port  # noqa: E402
from ..support.receiver import Rule  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)


def parse(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of a scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    return parse(generate_latest(registry).decode())


def registry(cache_seconds: float = 0.0) -> CollectorRegistry:
    """A registry with the queue's gauges (read at every scrape unless told) and the
    process's delivery counters."""
    fresh = CollectorRegistry()
    fresh.register(metrics.QueueCollector(cache_seconds=cache_seconds))
    fresh.register(metrics.DELIVERIES)
    fresh.register(metrics.DURATION)
    metrics.register(CollectorRegistry())  # connects the counters to the worker's signal
    return fresh


def deliveries(samples, outcome: str) -> float:
    return samples.get(("activity_queue_deliveries_total", (("outcome", outcome),)), 0.0)


def gauge(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_queue_state_and_outcomes_after_real_deliveries(receiver, worker):
    receiver.rules["/ok/"] = Rule(status=202)
    receiver.rules["/down/"] = Rule(status=500)
    reg = registry()
    before = scrape(reg)
    assert gauge(before, "activity_queue_depth") == 0
    assert gauge(before, "activity_queue_oldest_pending_age_seconds") == 0

    for path in ("/ok/", "/ok/", "/down/"):
        send(receiver.url(path))
    queued = scrape(reg)
    assert gauge(queued, "activity_queue_depth") == 3
    assert gauge(queued, "activity_queue_due") == 3
    assert gauge(queued, "activity_queue_in_flight") == 0
    assert gauge(queued, "activity_queue_oldest_pending_age_seconds") > 0

    with aq_settings(CIRCUIT_THRESHOLD=5):
        report = worker().run_once(timeout=20)
    assert (report.sent, report.retried) == (2, 1)

    after = scrape(reg)
    assert deliveries(after, "sent") - deliveries(before, "sent") == 2
    assert deliveries(after, "retrying") - deliveries(before, "retrying") == 1
    durations = "activity_queue_delivery_duration_seconds_count"
    assert after[(durations, ())] - before[(durations, ())] == 3
    assert gauge(after, "activity_queue_depth") == 1  # the retry waits for its backoff
    assert gauge(after, "activity_queue_due") == 0
    assert gauge(after, "activity_queue_hosts", state="open") == 0


def test_an_open_circuit_and_its_waiting_rows(receiver, worker):
    receiver.rules["/inbox/"] = Rule(status=503)
    reg = registry()
    for _ in range(3):
        send(receiver.url("/inbox/"))
    with aq_settings(CIRCUIT_THRESHOLD=3, BACKOFF_FACTOR=1.0):
        worker().run_once(timeout=20)
    ScheduledActivity.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))

    samples = scrape(reg)
    assert gauge(samples, "activity_queue_hosts", state="open") == 1
    assert gauge(samples, "activity_queue_hosts", state="unavailable") == 0
    assert gauge(samples, "activity_queue_waiting_for_hosts") == 3
    assert gauge(samples, "activity_queue_due") == 0  # due, but not for a worker
    assert gauge(samples, "activity_queue_lag_seconds") == 0


def test_scrapes_within_the_cache_time_ask_the_database_once(receiver):
    reg = registry(cache_seconds=60.0)
    with CaptureQueriesContext(connection) as first:
        scrape(reg)
    send(receiver.url("/inbox/"))
    with CaptureQueriesContext(connection) as again:
        samples = scrape(reg)
    assert first.captured_queries
    assert again.captured_queries == []
    assert gauge(samples, "activity_queue_depth") == 0  # the cached reading


def test_the_reading_costs_the_same_queries_whatever_the_depth(receiver):
    reg = registry()
    with CaptureQueriesContext(connection) as empty:
        scrape(reg)
    for _ in range(30):
        send(receiver.url("/inbox/"))
    with CaptureQueriesContext(connection) as deep:
        scrape(reg)
    assert len(deep.captured_queries) == len(empty.captured_queries)


def test_metrics_true_fills_the_default_registry(spawn):
    code = ("from prometheus_client import REGISTRY, generate_latest; "
            "print(generate_latest(REGISTRY).decode())")
    shell = spawn("shell", "-v", "0", "-c", code, queue={"METRICS": True})
    assert shell.wait(60) == 0, shell.stderr()
    samples = parse(shell.stdout())
    assert gauge(samples, "activity_queue_depth") == 0
    assert ("activity_queue_hosts", (("state", "open"),)) in samples


def test_the_dedicated_worker_serves_its_metrics(spawn, receiver):
    port = free_port()
    worker = spawn("activity_worker", "--metrics-port", str(port))
    url = f"http://127.0.0.1:{port}/metrics"

    def fetched():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return parse(response.read().decode())
        except OSError:
            return None

    assert wait_until(fetched, timeout=30), worker.stderr()
    send(receiver.url("/inbox/"))
    assert wait_until(lambda: receiver.received, timeout=30), worker.stderr()
    samples = wait_until(lambda: deliveries(fetched() or {}, "sent") == 1 and fetched(),
                         timeout=30)
    assert samples, worker.stderr()
    assert f"metrics at {url}" in worker.stdout()


def test_the_workers_metrics_server_closes_each_scrapes_connection():
    """Each scrape runs in a thread of its own: a database connection it opened and left
    open would wait for the garbage collector, one more per scrape."""
    opened = []

    def record(sender, connection, **kwargs):
        if connection.alias == "default" and threading.current_thread() is not main:
            opened.append(connection)

    main = threading.current_thread()
    port = free_port()
    connection_created.connect(record)
    try:
        call_command("activity_worker", "--burst", "--metrics-port", str(port))

        def scraped_after_a_read():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert b"activity_queue_depth" in r.read()
            return opened  # the collector reads at most every CACHE_SECONDS

        assert wait_until(scraped_after_a_read, timeout=metrics.CACHE_SECONDS + 5,
                          interval=0.5)
    finally:
        connection_created.disconnect(record)
    assert [c.connection for c in opened] == [None] * len(opened)


@pytest.mark.parametrize(("port", "message"), [
    (0, "--metrics-port must be between 1 and 65535, not 0"),
    (70000, "--metrics-port must be between 1 and 65535, not 70000"),
])
def test_a_bad_metrics_port_is_a_usage_error(port, message):
    with pytest.raises(CommandError, match=message):
        call_command("activity_worker", "--burst", "--metrics-port", str(port))


def test_a_port_in_use_is_a_clear_error():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"cannot listen on 127.0.0.1:{port}"):
            call_command("activity_worker", "--burst", "--metrics-port", str(port))


def test_metrics_port_without_prometheus_client(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(CommandError, match=r"pip install 'prometheus-client>=0\.20' \(the "
                                           r"activity_queue\[metrics\] extra\)"):
        call_command("activity_worker", "--burst", "--metrics-port", "9999")
