"""Final failures reach Sentry once each, tagged and grouped per host; no Sentry, no problem."""

import logging

import pytest
import sentry_sdk
from django.utils import timezone

from activity_queue import enqueue
from activity_queue.models import Activity, ScheduledActivity

from ..support.helpers import aq_settings
from ..support.receiver import Rule

pytestmark = pytest.mark.django_db(transaction=True)

NOTE = {"type": "Update", "object": "https://here.example/notes/1"}


def test_final_failure_is_one_tagged_event(receiver, worker, sentry, caplog):
    receiver.rules["/inbox/"] = Rule(status=410, body=b"gone")
    enqueue(NOTE, to=receiver.url("/inbox/"))
    with caplog.at_level(logging.ERROR, logger="activity_queue.failures"):
        assert worker().run_once(timeout=10).failed == 1
    (record,) = [r for r in caplog.records if r.name == "activity_queue.failures"]
    assert record.levelno == logging.ERROR
    assert record.inbox_host == receiver.base

    (event,) = sentry.events()
    assert event["level"] == "error"
    assert event["tags"] == {"inbox_host": receiver.base, "activity_type": "Update",
                             "attempts": "1", "status_code": "410"}
    assert event["fingerprint"] == ["activity_queue", "delivery-failed", receiver.base]
    assert event["message"] == f"Delivery to {receiver.base} failed: HTTP 410"
    context = event["contexts"]["activity"]
    assert context["inbox"] == receiver.url("/inbox/")
    assert context["object"] == "https://here.example/notes/1"
    assert context["response"] == "gone"


def test_retries_send_nothing_and_exhaustion_sends_one(receiver, worker, sentry):
    receiver.rules["/inbox/"] = Rule(status=503)
    enqueue(NOTE, to=receiver.url("/inbox/"))
    with aq_settings(MAX_ATTEMPTS=2):
        w = worker()
        assert w.run_once(timeout=10).retried == 1
        assert sentry.events() == []
        ScheduledActivity.objects.update(next_attempt_at=timezone.now())
        assert w.run_once(timeout=10).failed == 1
    (event,) = sentry.events()
    assert event["tags"]["attempts"] == "2"
    assert event["tags"]["status_code"] == "503"


def test_failures_group_per_host(receiver, worker, sentry):
    receiver.rules["/a/"] = Rule(status=404)
    receiver.rules["/b/"] = Rule(status=400)
    enqueue(NOTE, to=[receiver.url("/a/"), receiver.url("/b/")])
    enqueue(NOTE, to="http://127.0.0.1:1/inbox/")  # nobody listens: a connection error
    with aq_settings(MAX_ATTEMPTS=1):
        assert worker().run_once(timeout=10).failed == 3
    fingerprints = sorted(tuple(e["fingerprint"]) for e in sentry.events())
    assert fingerprints == sorted([
        ("activity_queue", "delivery-failed", receiver.base),
        ("activity_queue", "delivery-failed", receiver.base),
        ("activity_queue", "delivery-failed", "http://127.0.0.1:1"),
    ])
    unreachable = [e for e in sentry.events() if e["tags"]["inbox_host"] == "http://127.0.0.1:1"]
    assert unreachable[0]["tags"]["status_code"] == "none"


def test_final_failure_without_sentry(receiver, worker, caplog):
    assert not sentry_sdk.get_client().is_active()
    receiver.rules["/inbox/"] = Rule(status=404)
    enqueue(NOTE, to=receiver.url("/inbox/"))
    with caplog.at_level(logging.ERROR, logger="activity_queue.failures"):
        assert worker().run_once(timeout=10).failed == 1
    assert Activity.objects.get().status == "failed"
    assert any(r.name == "activity_queue.failures" for r in caplog.records)
