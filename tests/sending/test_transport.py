"""One worker step against a real HTTP receiver: what is sent, and what each answer leads to."""

import json
import socket
import time
from datetime import timedelta
from email.utils import format_datetime

import pytest
from django.utils import timezone

from activity_queue import enqueue
from activity_queue.conf import get_config
from activity_queue.models import Activity, ScheduledActivity
from activity_queue.sending.transport import CONTENT_TYPE

from ..support.helpers import aq_settings, running, wait_until
from ..support.peer import Conn, drop_the_second_request, keep_alive
from ..support.receiver import Receiver, Rule

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
    assert log.payload.document == row.payload.document
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
    assert row.last_error == "no response within 0.2 s (TIMEOUT)"


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
    assert json.loads(moved.body) == row.payload.document
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


# -- the HTTP client against scripted peers (tests/support/peer.py), through the worker --------

def once(answer: bytes):
    """A peer script: read one request, send ``answer`` verbatim, wait for the client to close."""
    def script(conn: Conn) -> None:
        if conn.read_request() is not None:
            conn.send(answer)
            conn.wait_closed()
    return script


def last_error_after_one_step(worker, peer_url: str, **overrides) -> str:
    enqueue(NOTE, to=peer_url)
    report, _, _ = step(worker, **overrides)
    assert report.retried == 1, report.outcomes
    row = ScheduledActivity.objects.get()
    assert (row.attempts, row.last_status) == (1, None)
    return row.last_error


@pytest.mark.parametrize(("script", "most"), [
    (keep_alive, 2),
    (once(b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"), 20),
], ids=["keep-alive", "connection-close"])
def test_deliveries_to_one_host_reuse_connections(peer, worker, script, most):
    server = peer(script)
    enqueue(NOTE, to=[server.url(f"/users/{n}/inbox") for n in range(20)])
    report, _, _ = step(worker, PER_HOST=2)
    assert report.sent == 20
    assert len(server.requests) == 20
    assert server.accepts <= most
    if most == 20:
        assert server.accepts == 20


def test_a_pooled_connection_closed_while_idle_is_replaced(peer, worker):
    def answer_then_close(conn: Conn) -> None:
        if conn.read_request() is not None:
            conn.answer(202)
            conn.close()

    server = peer(answer_then_close)
    with aq_settings():
        delivering = worker()
        enqueue(NOTE, to=server.url("/inbox/1"))
        assert delivering.run_once(timeout=20).sent == 1
        assert server.wait_for(lambda s: 0 in s.server_closed)
        enqueue(NOTE, to=server.url("/inbox/2"))
        report = delivering.run_once(timeout=20)
    assert (report.sent, report.retried) == (1, 0)
    assert Activity.objects.get(inbox=server.url("/inbox/2")).attempts == 1
    assert [(r.conn, r.target) for r in server.requests] == [(0, "/inbox/1"), (1, "/inbox/2")]


def test_a_pooled_connection_dropped_as_the_request_arrives_is_replaced(peer, worker):
    server = peer(drop_the_second_request)
    with aq_settings():
        delivering = worker()
        enqueue(NOTE, to=server.url("/inbox/1"))
        assert delivering.run_once(timeout=20).sent == 1
        enqueue(NOTE, to=server.url("/inbox/2"))
        report = delivering.run_once(timeout=20)
    assert (report.sent, report.retried) == (1, 0)
    assert Activity.objects.get(inbox=server.url("/inbox/2")).attempts == 1
    assert [r.conn for r in server.requests] == [0, 0, 1]


def test_an_interim_continue_is_skipped(peer, worker):
    server = peer(once(b"HTTP/1.1 100 Continue\r\n\r\n"
                       b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\n{\"ok\": 1}\r\n"))
    enqueue(NOTE, to=server.url())
    report, _, _ = step(worker)
    assert report.sent == 1
    log = Activity.objects.get()
    assert (log.status_code, log.response_excerpt) == (201, '{"ok": 1}\r\n')


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nall \r\n5\r\nright\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nall right",
], ids=["chunked", "until-close"])
def test_bodies_without_a_length_are_read(peer, worker, answer):
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(answer)
        conn.close()

    enqueue(NOTE, to=peer(script).url())
    report, _, _ = step(worker)
    assert report.sent == 1
    assert Activity.objects.get().response_excerpt == "all right"


def test_a_body_shorter_than_its_length_is_retried(peer, worker):
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(b"HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\n{\"ok\"")
        conn.close()

    error = last_error_after_one_step(worker, peer(script).url())
    assert error == "connection failed: connection closed mid-response"


@pytest.mark.parametrize(("answer", "error"), [
    (b"SSH-2.0-OpenSSH_9.6\r\n", "bad response: invalid HTTP response: "),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n",
     "bad response: response head larger than 65536 bytes"),
    (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
     "bad response: the server switched protocols"),
], ids=["not-http", "huge-head", "upgrade"])
def test_what_is_not_http_is_retried_as_a_bad_response(peer, worker, answer, error):
    assert last_error_after_one_step(worker, peer(once(answer)).url()).startswith(error)


def test_a_peer_trickling_bytes_hits_the_total_timeout(peer, worker):
    def slowloris(conn: Conn) -> None:
        conn.read_request()
        conn.send(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and conn.send(b"a"):
            time.sleep(0.05)

    server = peer(slowloris)
    enqueue(NOTE, to=server.url())
    report, _, _ = step(worker, TIMEOUT=0.3)
    assert report.retried == 1
    (outcome,) = report.outcomes
    # Bytes kept the read timeout (0.3 s) away; the total one (3 × TIMEOUT) ended it.
    assert 3 * 300 - 50 <= outcome.duration_ms < 5000
    assert ScheduledActivity.objects.get().last_error == \
        "response not complete within 0.9 s (3 × TIMEOUT)"
    assert server.wait_for(lambda s: 0 in s.client_closed)


def test_a_peer_that_never_answers_hits_the_read_timeout(peer, worker):
    def silent(conn: Conn) -> None:
        conn.read_request()
        conn.wait_closed(15)

    enqueue(NOTE, to=peer(silent).url())
    report, _, _ = step(worker, TIMEOUT=0.5)
    (outcome,) = report.outcomes
    assert 500 <= outcome.duration_ms < 3 * 500  # the read timeout, not the total one
    assert ScheduledActivity.objects.get().last_error == "no response within 0.5 s (TIMEOUT)"


def test_a_response_that_stalls_hits_the_read_timeout(peer, worker):
    def stalls(conn: Conn) -> None:
        conn.read_request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{")
        conn.wait_closed(15)

    enqueue(NOTE, to=peer(stalls).url())
    report, _, _ = step(worker, TIMEOUT=0.3)
    (outcome,) = report.outcomes
    assert 300 <= outcome.duration_ms < 3 * 300
    assert ScheduledActivity.objects.get().last_error == \
        "response stalled: no further bytes within 0.3 s (TIMEOUT)"


def test_a_connect_that_hangs_hits_the_connect_timeout(full_backlog, worker):
    enqueue(NOTE, to=full_backlog.url())
    report, _, _ = step(worker, TIMEOUT=0.3)
    assert report.retried == 1
    (outcome,) = report.outcomes
    assert 300 <= outcome.duration_ms < 3 * 300
    assert ScheduledActivity.objects.get().last_error == \
        "connect did not complete within 0.3 s (TIMEOUT)"


def test_a_tls_handshake_that_hangs_hits_the_connect_timeout(peer, worker):
    """The connect timeout covers the TLS handshake: a plain TCP peer never answers it."""
    server = peer(lambda conn: conn.wait_closed(15))
    enqueue(NOTE, to=server.url().replace("http://", "https://"))
    report, _, _ = step(worker, TIMEOUT=0.3)
    (outcome,) = report.outcomes
    assert 300 <= outcome.duration_ms < 3 * 300
    assert ScheduledActivity.objects.get().last_error == \
        "connect did not complete within 0.3 s (TIMEOUT)"
    assert server.wait_for(lambda s: 0 in s.client_closed)


def test_a_huge_body_is_cut_and_its_connection_closed(peer, worker):
    def huge(conn: Conn) -> None:
        conn.read_request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 8388608\r\n\r\n")
        for _ in range(128):  # 8 MB, unless the client hangs up first
            if not conn.send(b"x" * 65536):
                break
        conn.wait_closed()

    server = peer(huge)
    enqueue(NOTE, to=server.url())
    report, _, _ = step(worker, MAX_RESPONSE_BYTES=5000, RESPONSE_EXCERPT=10**6)
    assert report.sent == 1
    assert Activity.objects.get().response_excerpt == "x" * 5000
    assert server.wait_for(lambda s: 0 in s.client_closed)


# -- HTTPS -----------------------------------------------------------------------------

@pytest.fixture
def trusted(ca, monkeypatch, tmp_path):
    """Trust ``ca`` (and only it) as a deployment would: SSL_CERT_FILE."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    return ca


def test_https_delivery(peer, worker, trusted):
    server = peer(tls=trusted.server)
    inbox = server.origin("localhost") + "/inbox/"
    enqueue(NOTE, to=[inbox, inbox + "2"])
    report, _, _ = step(worker, PER_HOST=1)
    assert report.sent == 2
    assert server.accepts == 1
    assert server.conns[0].server_name == "localhost"
    assert {r.headers["host"] for r in server.requests} == {f"localhost:{server.port}"}
    assert Activity.objects.filter(status="sent", status_code=202).count() == 2


def test_https_to_an_untrusted_certificate_is_retried(peer, worker, ca, monkeypatch, tmp_path):
    import trustme

    bundle = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    server = peer(tls=ca.server)
    error = last_error_after_one_step(worker, server.origin("localhost") + "/inbox/")
    assert error.startswith("connection failed: ")
    assert "certificate verify failed" in error
    assert server.requests == []


class Concurrency:
    """A peer script wrapper that records how many requests it held at once.

    A request counts as held until it is answered or its client has closed the
    connection. The close is read from the socket when the next request arrives, so a
    close the peer's own thread has not noticed yet is not counted as held.
    """

    def __init__(self, answer_after: float | None) -> None:
        import threading

        self.answer_after = answer_after
        self.lock = threading.Lock()
        self.held: list[Conn] = []
        self.most = 0

    @staticmethod
    def _closed_by_client(conn: Conn) -> bool:
        import select
        import socket

        try:
            if not select.select([conn.sock], [], [], 0)[0]:
                return False
            return conn.sock.recv(1, socket.MSG_PEEK) == b""
        except TimeoutError:  # its own thread read the bytes first: still open
            return False
        except (OSError, ValueError):  # closed here already
            return True

    def _release(self, conn: Conn) -> None:
        with self.lock:
            self.held = [c for c in self.held if c is not conn]

    def __call__(self, conn: Conn) -> None:
        while conn.read_request() is not None:
            with self.lock:
                self.held = [c for c in self.held if not self._closed_by_client(c)]
                self.held.append(conn)
                self.most = max(self.most, len(self.held))
            if self.answer_after is None:  # a black hole: keep the request until dropped
                conn.wait_closed()
                self._release(conn)
                return
            time.sleep(self.answer_after)  # a slow inbox that does answer
            self._release(conn)  # before the answer, which lets the client send the next
            conn.answer(202)


def silent_host(peer, inboxes: int) -> Concurrency:
    """A peer that never answers, with ``inboxes`` activities queued for it."""
    silent = Concurrency(answer_after=None)
    server = peer(silent)
    enqueue(NOTE, to=[server.url(f"/users/{n}/inbox") for n in range(inboxes)])
    return silent


def test_a_silent_host_holds_two_slots_not_per_host(peer, worker):
    silent = silent_host(peer, inboxes=5)
    report, _, _ = step(worker, PER_HOST=8, TIMEOUT=0.4, CIRCUIT_THRESHOLD=100)
    assert report.retried == 5
    assert silent.most == 2  # the first window; each timeout then halves it


def test_an_answering_host_opens_up_to_per_host_slots(peer, worker):
    slow = Concurrency(answer_after=0.05)
    server = peer(slow)
    enqueue(NOTE, to=[server.url(f"/users/{n}/inbox") for n in range(40)])
    report, _, _ = step(worker, PER_HOST=4)
    assert report.sent == 40
    assert slow.most == 4


def leased(w) -> int:
    return ScheduledActivity.objects.filter(leased_by=w.id).count()


def test_a_host_that_never_answered_gets_only_per_host_rows_held(peer, worker):
    silent = silent_host(peer, inboxes=120)
    with aq_settings(PER_HOST=2, BATCH_SIZE=200, TIMEOUT=1.0, CIRCUIT_THRESHOLD=1000,
                     POLL_INTERVAL=0.05):
        w = worker()
        assert w.hosts.backlog == 50
        with running(w):
            most = 0

            def timed_out() -> bool:
                # What the worker holds, not what is leased: a claim may lease a few more
                # rows of a host it holds none of, and gives the surplus back at once.
                nonlocal most
                most = max(most, len(w._held))
                # A timeout written back (a claim alone counts an attempt already).
                return ScheduledActivity.objects.exclude(last_error="").exists()

            # Until its first timeouts and after them: PER_HOST rows held, not a backlog of 50.
            assert wait_until(timed_out, timeout=10)
            assert wait_until(lambda: 0 < leased(w) <= 2 and silent.most == 2, timeout=10)
            assert 0 < most <= 2
    assert not ScheduledActivity.objects.filter(leased_by=w.id).exists()


def test_a_timing_out_hosts_backlog_waits_for_an_answer_moved_once(peer, worker):
    """Left due, a dead host's backlog (the oldest rows) is scanned by every claim; moved
    again at every timeout, the same rows would be rewritten over and over."""
    silent_host(peer, inboxes=60)
    start = timezone.now()
    with aq_settings(PER_HOST=2, BATCH_SIZE=200, TIMEOUT=0.3, CIRCUIT_THRESHOLD=1000,
                     CIRCUIT_COOLDOWN=30, BACKOFF_FACTOR=60, POLL_INTERVAL=0.05):
        w = worker()
        with running(w):
            def waiting() -> set:
                return set(ScheduledActivity.objects.filter(
                    leased_by="", attempts=0,
                    next_attempt_at__gte=start + timedelta(seconds=30),
                ).values_list("id", "next_attempt_at"))

            assert wait_until(lambda: len(waiting()) >= 50, timeout=10)
            first = waiting()
            assert len({when for _, when in first}) == 1  # one time for the host
            # The rows left due as probes time out in turn; the others stay where they are.
            assert wait_until(lambda: ScheduledActivity.objects.filter(
                attempts__gte=1).count() >= 4, timeout=10)
            assert first <= waiting()
    assert not ScheduledActivity.objects.filter(attempts__gt=1).exists()


def test_a_host_that_answers_again_gets_its_waiting_backlog_back_at_once(peer, worker):
    answering = {"yes": False}

    def script(conn: Conn) -> None:
        while conn.read_request() is not None:
            if not answering["yes"]:
                conn.wait_closed()
                return
            conn.answer(202)

    server = peer(script)
    enqueue(NOTE, to=[server.url(f"/users/{n}/inbox") for n in range(40)])
    with aq_settings(PER_HOST=2, BATCH_SIZE=200, TIMEOUT=0.3, CIRCUIT_THRESHOLD=1000,
                     CIRCUIT_COOLDOWN=60, BACKOFF_FACTOR=0.2, BACKOFF_MAX=0.5,
                     POLL_INTERVAL=0.05):
        w = worker()
        with running(w):
            assert wait_until(lambda: ScheduledActivity.objects.filter(
                next_attempt_at__gt=timezone.now() + timedelta(seconds=30)).count() >= 30,
                timeout=10)
            answering["yes"] = True
            # A probe is answered: the rest no longer waits for the end of CIRCUIT_COOLDOWN.
            assert wait_until(lambda: Activity.objects.filter(status="sent").count() == 40,
                              timeout=15)


def test_a_host_that_answers_gets_a_longer_line_of_rows(peer, worker):
    slow = Concurrency(answer_after=0.02)
    server = peer(slow)
    enqueue(NOTE, to=[server.url(f"/users/{n}/inbox") for n in range(300)])
    with aq_settings(PER_HOST=2, BATCH_SIZE=200, POLL_INTERVAL=0.05):
        w = worker()
        with running(w):
            # PER_HOST in the first claim; once the host has answered, up to hosts.backlog.
            assert wait_until(lambda: leased(w) > 2 * 2, timeout=10)
    assert not ScheduledActivity.objects.filter(leased_by=w.id).exists()


def test_a_host_that_stops_answering_gets_few_rows_held(peer, worker):
    answering = {"yes": True}

    def script(conn: Conn) -> None:
        while conn.read_request() is not None:
            if answering["yes"]:
                time.sleep(0.01)
                conn.answer(202)
            else:
                conn.wait_closed()
                return

    server = peer(script)
    inbox = server.url("/inbox")
    enqueue(NOTE, to=inbox)
    with aq_settings(PER_HOST=2, BATCH_SIZE=200, TIMEOUT=1.0, CIRCUIT_THRESHOLD=1000,
                     POLL_INTERVAL=0.05):
        w = worker()
        with running(w):
            assert wait_until(lambda: Activity.objects.filter(status="sent").exists(),
                              timeout=10)
            answering["yes"] = False
            enqueue(NOTE, to=[server.url(f"/users/{n}/inbox") for n in range(120)])
            w.wake()
            assert wait_until(lambda: leased(w) > 2, timeout=10)  # it had answered: a line
            # After its first timeouts the rest goes back to the queue: PER_HOST held at most.
            assert wait_until(lambda: 0 < leased(w) <= 2, timeout=10)
    assert not ScheduledActivity.objects.filter(leased_by=w.id).exists()
