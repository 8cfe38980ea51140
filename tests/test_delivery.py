"""One worker step against a real HTTP receiver: what is sent, and what each answer leads to."""

import json
import socket
from datetime import timedelta
from email.utils import format_datetime

import pytest
from django.utils import timezone

from activity_queue import enqueue
from activity_queue.conf import get_config
from activity_queue.delivery import CONTENT_TYPE
from activity_queue.models import Activity, ScheduledActivity

from .conftest import aq_settings
from .receiver import Receiver, Rule

pytestmark = pytest.mark.django_db(transaction=True)

NOTE = {"@context": "https://www.w3.org/ns/activitystreams", "type": "Create",
        "object": {"@id": "https://here.example/notes/1", "@type": "Note",
                   "content": "héllo ✓"}}


def step(worker, **overrides):
    """Run one worker step under ``overrides``; return (report, before, after)."""
    with aq_settings(**overrides):
        before = timezone.now()
        report = worker().run_once(timeout=20)
        after = timezone.now()
    return report, before, after


def make_due(**filters) -> None:
    ScheduledActivity.objects.filter(**filters).update(next_attempt_at=timezone.now())


def assert_due_in(row, before, after, low: float, high: float) -> None:
    """``row`` is due between ``low`` and ``high`` seconds after the step that resolved it."""
    assert before + timedelta(seconds=low) <= row.next_attempt_at
    assert row.next_attempt_at <= after + timedelta(seconds=high)


def test_success_is_logged_and_leaves_the_queue(receiver, worker):
    receiver.rules["/inbox/"] = Rule(status=201, body=b'{"ok": true}')
    (row,) = enqueue(NOTE, to=receiver.url("/inbox/"))
    report, _, _ = step(worker)
    assert (report.claimed, report.sent, report.failed, report.retried) == (1, 1, 0, 0)
    assert not ScheduledActivity.objects.exists()
    log = Activity.objects.get()
    assert log.status == "sent"
    assert log.direction == "out"
    assert log.status_code == 201
    assert log.response_excerpt == '{"ok": true}'
    assert log.attempts == 1
    assert log.error == ""
    assert log.duration_ms is not None and log.duration_ms > 0
    assert log.activity_id == row.activity_id
    assert log.inbox == receiver.url("/inbox/")
    assert log.host == receiver.base
    assert log.payload == row.payload
    assert log.resolved_at >= log.created_at


def test_request_carries_the_activity_and_its_headers(receiver, worker):
    (row,) = enqueue(NOTE, to=receiver.url("/inbox/"))
    step(worker)
    (request,) = receiver.received
    assert request.method == "POST"
    assert request.path == "/inbox/"
    assert request.headers["Content-Type"] == CONTENT_TYPE
    assert request.headers["User-Agent"] == get_config().USER_AGENT
    assert json.loads(request.body) == {**NOTE, "id": row.activity_id}
    assert int(request.headers["Content-Length"]) == len(request.body)


def test_retry_counts_the_attempt_and_backs_off(receiver, worker):
    receiver.rules["/inbox/"] = Rule(status=503, body=b"busy")
    enqueue(NOTE, to=receiver.url("/inbox/"))
    report, before, after = step(worker, BACKOFF_FACTOR=100.0)
    assert (report.sent, report.retried, report.failed) == (0, 1, 0)
    row = ScheduledActivity.objects.get()
    assert (row.attempts, row.last_status, row.last_error) == (1, 503, "HTTP 503")
    assert (row.leased_by, row.leased_until) == ("", None)
    assert_due_in(row, before, after, 75, 125)
    assert not Activity.objects.exists()

    make_due()
    _, before, after = step(worker, BACKOFF_FACTOR=100.0)
    row.refresh_from_db()
    assert row.attempts == 2
    assert_due_in(row, before, after, 150, 250)
    assert receiver.calls["/inbox/"] == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_are_retried(receiver, worker, status):
    receiver.rules["/inbox/"] = Rule(status=status)
    enqueue(NOTE, to=receiver.url("/inbox/"))
    report, _, _ = step(worker)
    assert report.retried == 1
    row = ScheduledActivity.objects.get()
    assert (row.attempts, row.last_status) == (1, status)
    assert row.next_attempt_at > timezone.now()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_client_errors_are_final_at_once(receiver, worker, status):
    receiver.rules["/inbox/"] = Rule(status=status, body=b'{"error": "no such inbox"}')
    enqueue(NOTE, to=receiver.url("/inbox/"))
    report, _, _ = step(worker)
    assert (report.failed, report.retried) == (1, 0)
    assert not ScheduledActivity.objects.exists()
    log = Activity.objects.get()
    assert (log.status, log.status_code, log.attempts) == ("failed", status, 1)
    assert log.error == f"HTTP {status}"
    assert log.response_excerpt == '{"error": "no such inbox"}'
    assert receiver.calls["/inbox/"] == 1


def test_retry_after_seconds_is_honoured(receiver, worker):
    receiver.rules["/inbox/"] = Rule(status=429, headers={"Retry-After": "600"})
    enqueue(NOTE, to=receiver.url("/inbox/"))
    _, before, after = step(worker)
    row = ScheduledActivity.objects.get()
    assert (row.attempts, row.last_status) == (1, 429)
    assert_due_in(row, before, after, 600, 600)


def test_retry_after_http_date_is_honoured(receiver, worker):
    when = timezone.now().replace(microsecond=0) + timedelta(seconds=900)
    receiver.rules["/inbox/"] = Rule(status=429,
                                     headers={"Retry-After": format_datetime(when, usegmt=True)})
    enqueue(NOTE, to=receiver.url("/inbox/"))
    _, before, after = step(worker)
    row = ScheduledActivity.objects.get()
    assert (row.attempts, row.last_status) == (1, 429)
    # The date becomes a delay when the answer arrives and a due time when it is written.
    assert when - timedelta(milliseconds=1) <= row.next_attempt_at <= when + (after - before)


def test_retry_after_is_capped(receiver, worker):
    receiver.rules["/inbox/"] = Rule(status=429, headers={"Retry-After": "99999999"})
    enqueue(NOTE, to=receiver.url("/inbox/"))
    _, before, after = step(worker, RETRY_AFTER_MAX=120.0)
    assert_due_in(ScheduledActivity.objects.get(), before, after, 120, 120)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_is_retried(worker):
    enqueue(NOTE, to=f"http://127.0.0.1:{_closed_port()}/inbox/")
    report, _, _ = step(worker)
    assert report.retried == 1
    row = ScheduledActivity.objects.get()
    assert row.attempts == 1
    assert row.last_status is None
    assert row.last_error.startswith("connection failed")


def test_timeout_is_retried(receiver, worker):
    receiver.rules["/inbox/"] = Rule(delay=1.5)
    enqueue(NOTE, to=receiver.url("/inbox/"))
    report, _, _ = step(worker, TIMEOUT=0.2)
    assert report.retried == 1
    row = ScheduledActivity.objects.get()
    assert row.attempts == 1
    assert row.last_status is None
    assert row.last_error == "timeout after 0.2s"


def test_exhausted_attempts_become_a_final_failure(receiver, worker):
    receiver.rules["/inbox/"] = Rule(status=503)
    enqueue(NOTE, to=receiver.url("/inbox/"))
    first, _, _ = step(worker, MAX_ATTEMPTS=3)
    make_due()
    second, _, _ = step(worker, MAX_ATTEMPTS=3)
    assert (first.retried, second.retried) == (1, 1)
    make_due()
    third, _, _ = step(worker, MAX_ATTEMPTS=3)
    assert (third.retried, third.failed) == (0, 1)
    assert not ScheduledActivity.objects.exists()
    log = Activity.objects.get()
    assert (log.status, log.status_code, log.attempts) == ("failed", 503, 3)
    assert log.error == "gave up after 3 attempts: HTTP 503"
    assert receiver.calls["/inbox/"] == 3


@pytest.mark.parametrize("status", [307, 308])
def test_redirect_is_followed(receiver, worker, status):
    receiver.rules["/old/inbox/"] = Rule(status=status, headers={"Location": "/new/inbox/"})
    receiver.rules["/new/inbox/"] = Rule(status=202)
    (row,) = enqueue(NOTE, to=receiver.url("/old/inbox/"))
    report, _, _ = step(worker)
    assert report.sent == 1
    assert [r.path for r in receiver.received] == ["/old/inbox/", "/new/inbox/"]
    moved = receiver.received[1]
    assert moved.method == "POST"
    assert json.loads(moved.body) == row.payload
    assert moved.headers["Content-Type"] == CONTENT_TYPE
    log = Activity.objects.get()
    assert (log.status, log.status_code) == ("sent", 202)


def test_redirect_loop_is_a_final_failure(receiver, worker):
    receiver.rules["/loop/"] = Rule(status=308, headers={"Location": "/loop/"})
    enqueue(NOTE, to=receiver.url("/loop/"))
    report, _, _ = step(worker)
    assert report.failed == 1
    log = Activity.objects.get()
    assert (log.status, log.status_code) == ("failed", 308)
    assert log.error == "more than 3 redirects"
    assert receiver.calls["/loop/"] == 4


@pytest.mark.parametrize(("status", "headers", "error"), [
    (301, {}, "HTTP 301 redirect without a Location header"),
    (307, {}, "HTTP 307 redirect without a Location header"),
    (302, {"Location": "http://[::1/inbox"},
     "HTTP 302 redirect to an invalid Location 'http://[::1/inbox': Invalid IPv6 URL"),
    (308, {"Location": "http://127.0.0.1:99999/inbox"},
     "HTTP 308 redirect to an invalid Location 'http://127.0.0.1:99999/inbox': "
     "Port out of range 0-65535"),
    (307, {"Location": "/new inbox/"},
     "HTTP 307 redirect to an invalid Location '/new inbox/': "
     "whitespace or control characters"),
])
def test_redirect_without_a_usable_location_is_a_final_failure(receiver, worker, status,
                                                                headers, error):
    receiver.rules["/inbox/"] = Rule(status=status, headers=headers)
    enqueue(NOTE, to=receiver.url("/inbox/"))
    report, _, _ = step(worker)
    assert (report.failed, report.retried) == (1, 0)
    assert not ScheduledActivity.objects.exists()
    log = Activity.objects.get()
    assert (log.status, log.status_code, log.attempts) == ("failed", status, 1)
    assert log.error == error
    assert [r.path for r in receiver.received] == ["/inbox/"]


def test_see_other_is_not_followed(receiver, worker):
    """A 303 after a POST means "GET that instead": the inbox did not take the activity."""
    receiver.rules["/inbox/"] = Rule(status=303, headers={"Location": "/elsewhere/"})
    enqueue(NOTE, to=receiver.url("/inbox/"))
    report, _, _ = step(worker)
    assert (report.failed, report.retried, report.sent) == (1, 0, 0)
    assert not ScheduledActivity.objects.exists()
    log = Activity.objects.get()
    assert (log.status, log.status_code) == ("failed", 303)
    assert log.error == "303 See Other: the inbox did not accept the POST, not following"
    assert [r.path for r in receiver.received] == ["/inbox/"]


def test_redirect_to_another_scheme_is_refused(receiver, worker):
    receiver.rules["/inbox/"] = Rule(status=307, headers={"Location": "ftp://127.0.0.1/inbox"})
    enqueue(NOTE, to=receiver.url("/inbox/"))
    report, _, _ = step(worker)
    assert report.failed == 1
    assert Activity.objects.get().error.startswith("refused: inbox 'ftp://127.0.0.1/inbox' "
                                                   "must be http or https")


@pytest.mark.parametrize(("size", "cap", "kept"), [
    (50_000, 1_000, 1_000),
    (300_000, 200_000, 200_000),  # more than one socket read
    (3_000, 200_000, 3_000),
])
def test_response_is_read_up_to_the_cap(receiver, worker, size, cap, kept):
    receiver.rules["/inbox/"] = Rule(status=200, body=b"x" * size)
    enqueue(NOTE, to=receiver.url("/inbox/"))
    report, _, _ = step(worker, MAX_RESPONSE_BYTES=cap, RESPONSE_EXCERPT=10**6)
    assert report.sent == 1
    assert Activity.objects.get().response_excerpt == "x" * kept


def test_excerpt_is_cut_to_its_length(receiver, worker):
    receiver.rules["/inbox/"] = Rule(status=400, body="é".encode() * 500)
    enqueue(NOTE, to=receiver.url("/inbox/"))
    step(worker, RESPONSE_EXCERPT=10)
    assert Activity.objects.get().response_excerpt == "é" * 10


def test_slow_inbox_does_not_delay_a_healthy_one(worker):
    """The slow host holds its first answer until the healthy host has answered everything.

    With head-of-line blocking (one slot, or the slow host taking every slot)
    the healthy deliveries would wait behind the slow one, whose hold would
    give up after 5 s, and the timeline checked below would be reversed.
    """
    timeline: list = []
    healthy = Receiver(events=timeline).start()
    slow = Receiver(events=timeline).start()
    try:
        slow.rules["/inbox/"] = Rule(hold=lambda: healthy.count("response") >= 4, hold_max=5)
        enqueue(NOTE, to=[slow.url("/inbox/")] + [slow.url(f"/inbox/{n}") for n in range(3)])
        enqueue(NOTE, to=[healthy.url(f"/inbox/{n}") for n in range(4)])
        report, _, _ = step(worker, WORKERS=2, PER_HOST=1, TIMEOUT=10.0)
    finally:
        healthy.stop()
        slow.stop()
    assert report.sent == 8
    first_slow_answer = timeline.index(("response", slow.url("/inbox/")))
    assert timeline.index(("request", slow.url("/inbox/"))) < first_slow_answer
    healthy_answers = [i for i, (kind, url) in enumerate(timeline)
                       if kind == "response" and url.startswith(healthy.base + "/")]
    assert len(healthy_answers) == 4
    assert max(healthy_answers) < first_slow_answer
    # One request at a time reached the slow host (PER_HOST = 1).
    slow_kinds = [kind for kind, url in timeline if url.startswith(slow.base + "/")]
    assert slow_kinds == ["request", "response"] * 4
