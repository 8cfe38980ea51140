"""Final-failure alerts through sentry-sdk; a no-op when Sentry is not set up.

One event per final failure, fingerprinted by inbox host, so a dead server is
one issue in Sentry however many activities it refuses; and one event when a
host becomes unavailable, however many queued deliveries end with it. The failure is also
logged on ``activity_queue.failures``; that logger is kept out of Sentry's
logging integration so the same failure is not reported twice.
"""

from __future__ import annotations

from datetime import datetime

from .jobs import Outcome

try:
    import sentry_sdk
    from sentry_sdk.integrations.logging import ignore_logger
except ImportError:  # pragma: no cover - sentry-sdk is a dependency, but stay optional
    sentry_sdk = None
else:
    ignore_logger("activity_queue.failures")


def report_final_failure(outcome: Outcome) -> None:
    if sentry_sdk is None or not sentry_sdk.get_client().is_active():
        return
    job = outcome.job
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("inbox_host", job.host)
        scope.set_tag("activity_type", job.activity_type)
        scope.set_tag("attempts", str(job.attempts))
        scope.set_tag("status_code", str(outcome.status_code or "none"))
        scope.set_context("activity", {
            "id": job.activity_id,
            "inbox": job.inbox,
            "object": job.object_id,
            "error": outcome.error,
            "response": outcome.excerpt[:500],
        })
        scope.fingerprint = ["activity_queue", "delivery-failed", job.host]
        sentry_sdk.capture_message(
            f"Delivery to {job.host} failed: {outcome.error}", level="error"
        )


def report_unavailable(host: str, failing_since: datetime | None, failed: int) -> None:
    if sentry_sdk is None or not sentry_sdk.get_client().is_active():
        return
    since = failing_since.isoformat() if failing_since else "unknown"
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("inbox_host", host)
        scope.set_context("host", {"failing_since": since, "failed_deliveries": failed})
        scope.fingerprint = ["activity_queue", "host-unavailable", host]
        sentry_sdk.capture_message(
            f"Deliveries to {host} stopped: failing since {since} ({failed} queued "
            "deliveries failed)", level="error")
