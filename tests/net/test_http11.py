"""The lean HTTP/1.1 client against real peers on loopback, each scripted byte by byte.

The client runs on its own event loop in a thread, as in the transport, so
that the test thread can wait (with deadlines) while the loop keeps running.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time

import pytest

from activity_queue.net import http11
from activity_queue.net.http11 import ConnectionClosed, ProtocolError, target
from activity_queue.sending.transport import header_lines, is_ip_literal, new_event_loop

from ..support.helpers import wait_until
from ..support.peer import Conn, Peer, drop_the_second_request, keep_alive, trickle_head

HEAD = header_lines({"User-Agent": "tests", "Content-Type": "application/json"})
BODY = b'{"type": "Create"}'


def trusting(*authorities) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for authority in authorities:
        authority.configure_trust(context)
    return context


class LoopThread:
    """An event loop running in a thread of its own (uvloop when installed)."""

    def __init__(self) -> None:
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args):
        async def call():
            return fn(*args)
        return self.run(call())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Harness:
    """Peers and clients made by one test, all stopped after it."""

    def __init__(self, start_peer) -> None:
        self.loop = LoopThread()
        self.start_peer = start_peer
        self.clients: list[http11.Client] = []
        #: Every name the clients asked to resolve.
        self.resolved: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every name is 127.0.0.1 here; an address is itself."""
        self.resolved.append(host)
        return [host if is_ip_literal(host) else "127.0.0.1"]

    def peer(self, script=keep_alive, **kwargs) -> Peer:
        return self.start_peer(script, **kwargs)

    def client(self, *, read_timeout: float = 5.0, total_timeout: float = 15.0,
               max_body: int = 64 * 1024, keepalive: float = 30.0, connect_timeout: float = 5.0,
               **kwargs) -> http11.Client:
        client = http11.Client(self.resolve, connect_timeout=connect_timeout,
                               read_timeout=read_timeout,
                               total_timeout=total_timeout, max_body=max_body,
                               keepalive=keepalive, **kwargs)
        self.clients.append(client)
        return client

    def post(self, client: http11.Client, url: str, body: bytes = BODY,
             host: str | None = None) -> http11.Response:
        return self.loop.run(client.post(url, HEAD, body, host=host))

    def idle(self, client: http11.Client) -> int:
        return self.loop.call(client.idle_connections)

    def close(self) -> None:
        for client in self.clients:
            self.loop.call(client.close)
        self.loop.stop()


@pytest.fixture
def h(peer):
    harness = Harness(peer)
    yield harness
    harness.close()


def once(answer: bytes, *, then_close: bool = True):
    """A script: read one request, send ``answer`` verbatim, then close (or wait for the client)."""
    def script(conn: Conn) -> None:
        if conn.read_request() is None:
            return
        conn.send(answer)
        if then_close:
            conn.close()
        else:
            conn.wait_closed()
    return script


# -- keep-alive ------------------------------------------------------------------------

def test_posts_to_one_origin_share_one_connection(h):
    peer = h.peer()
    client = h.client()
    for n in range(10):
        assert h.post(client, peer.url(f"/inbox/{n}")).status == 202
    assert peer.accepts == 1
    assert [(r.conn, r.target) for r in peer.requests] == [(0, f"/inbox/{n}") for n in range(10)]
    assert h.idle(client) == 1


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.0 202 Accepted\r\nContent-Length: 2\r\n\r\n{}",
], ids=["connection-close", "http-1.0"])
def test_an_answer_that_does_not_keep_alive_is_not_pooled(h, answer):
    peer = h.peer(once(answer, then_close=False))
    client = h.client()
    for _ in range(3):
        assert h.post(client, peer.url()).body == b"{}"
    assert peer.accepts == 3
    assert h.idle(client) == 0
    # The client closed each one itself: no socket is left to the server's good will.
    assert peer.wait_for(lambda p: p.client_closed == {0, 1, 2})


def test_connections_of_different_origins_are_not_shared(h):
    first, second = h.peer(), h.peer()
    client = h.client()
    for _ in range(2):
        h.post(client, first.url())
        h.post(client, second.url())
    assert (first.accepts, second.accepts) == (1, 1)
    assert h.idle(client) == 2


# -- a pooled connection the server closed ---------------------------------------------

def answer_then_close(conn: Conn) -> None:
    """A server whose keep-alive timeout is zero: one answer per connection, then a FIN."""
    if conn.read_request() is not None:
        conn.answer(202)
        conn.close()


@pytest.fixture(params=["http", "https"])
def scheme(request):
    """Run a test over plain TCP and over TLS: ``(peer options, client options, host)``."""
    if request.param == "http":
        return {}, {}, "127.0.0.1"
    ca = request.getfixturevalue("ca")
    return {"tls": ca.server}, {"ssl_context": trusting(ca)}, "localhost"


def test_a_connection_closed_while_idle_is_replaced(h, scheme):
    peer_options, client_options, host = scheme
    peer = h.peer(answer_then_close, **peer_options)
    client = h.client(**client_options)
    url = peer.origin(host) + "/inbox/"
    assert h.post(client, url).status == 202
    assert peer.wait_for(lambda p: 0 in p.server_closed)
    assert h.post(client, url).status == 202
    assert peer.accepts == 2
    assert [r.conn for r in peer.requests] == [0, 1]


def test_a_connection_closed_as_the_request_arrives_is_replaced_once(h, scheme):
    """The race a keep-alive timeout makes: the server reads the request, then hangs up.

    Nothing of it was answered, so it is sent again on a new connection, once.
    """
    peer_options, client_options, host = scheme
    peer = h.peer(drop_the_second_request, **peer_options)
    client = h.client(**client_options)
    base = peer.origin(host)
    h.post(client, base + "/first")
    response = h.post(client, base + "/second")
    assert response.status == 202
    assert [(r.conn, r.target) for r in peer.requests] == [
        (0, "/first"), (0, "/second"), (1, "/second")]


def test_a_new_connection_closed_before_any_answer_is_not_retried(h):
    peer = h.peer(once(b""))
    client = h.client()
    with pytest.raises(ConnectionClosed, match="connection closed before any response"):
        h.post(client, peer.url())
    assert peer.accepts == 1


def test_a_replacement_that_also_fails_is_not_retried_again(h):
    def script(conn: Conn) -> None:
        conn.read_request()
        if conn.index == 0:
            conn.answer(202)
            conn.read_request()
        conn.close()

    peer = h.peer(script)
    client = h.client()
    h.post(client, peer.url())
    with pytest.raises(ConnectionClosed, match="before any response"):
        h.post(client, peer.url())
    assert peer.accepts == 2
    assert len(peer.requests) == 3


def test_a_connection_closed_after_an_interim_answer_is_not_retried(h):
    """``100 Continue`` means the server took the request: sending it again could repeat it."""
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.answer(202)
        conn.read_request()
        conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(0.05)
        conn.close()

    peer = h.peer(script)
    client = h.client()
    h.post(client, peer.url())
    with pytest.raises(ConnectionClosed, match="mid-response"):
        h.post(client, peer.url())
    assert peer.accepts == 1
    assert len(peer.requests) == 2


# -- what a response can look like -----------------------------------------------------

@pytest.mark.parametrize("apart", [False, True], ids=["one-packet", "two-packets"])
def test_an_interim_continue_is_skipped(h, apart):
    def script(conn: Conn) -> None:
        while conn.read_request():
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            if apart:
                time.sleep(0.05)
            conn.answer(201, b'{"made": true}')

    peer = h.peer(script)
    client = h.client()
    response = h.post(client, peer.url())
    assert (response.status, response.body) == (201, b'{"made": true}')
    assert h.post(client, peer.url()).status == 201
    assert peer.accepts == 1


def test_a_chunked_body_is_reassembled_and_the_connection_kept(h):
    def script(conn: Conn) -> None:
        while conn.read_request():
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"5\r\nhello\r\n")
            time.sleep(0.02)
            conn.send(b"6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")

    peer = h.peer(script)
    client = h.client()
    for _ in range(2):
        response = h.post(client, peer.url())
        assert (response.status, response.body) == (200, b"hello world")
    assert peer.accepts == 1


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_a_body_delimited_by_the_end_of_the_connection(h, version):
    answer = f"HTTP/{version} 200 OK\r\nContent-Type: text/plain\r\n\r\n".encode()
    peer = h.peer(once(answer + b"all of it, until the end"))
    client = h.client()
    response = h.post(client, peer.url())
    assert (response.status, response.body) == (200, b"all of it, until the end")
    assert h.idle(client) == 0


def test_a_body_shorter_than_its_length_is_an_error(h):
    peer = h.peer(once(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"))
    client = h.client()
    with pytest.raises(ConnectionClosed, match="connection closed mid-response"):
        h.post(client, peer.url())
    assert h.idle(client) == 0


def test_headers_are_lower_cased_and_a_repeated_one_keeps_the_last(h):
    peer = h.peer(once(b"HTTP/1.1 429 Too Many\r\nRetry-After: 5\r\nX-Seen: a\r\n"
                       b"x-seen: b\r\nContent-Length: 0\r\n\r\n", then_close=False))
    response = h.post(h.client(), peer.url())
    assert response.status == 429
    assert response.headers["retry-after"] == "5"
    assert response.headers["x-seen"] == "b"


# -- answers that are not HTTP ---------------------------------------------------------

@pytest.mark.parametrize(("answer", "error"), [
    (b"SSH-2.0-OpenSSH_9.6\r\n", "invalid HTTP response"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "invalid HTTP response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
     "invalid HTTP response"),
    (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
     "the server switched protocols"),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "invalid HTTP response"),
], ids=["not-http", "bad-status", "two-lengths", "upgrade", "bare-101"])
def test_what_is_not_a_usable_http_answer_is_a_protocol_error(h, answer, error):
    peer = h.peer(once(answer, then_close=False))
    client = h.client(read_timeout=3.0)
    with pytest.raises(ProtocolError, match=error):
        h.post(client, peer.url())
    assert h.idle(client) == 0
    assert peer.wait_for(lambda p: 0 in p.client_closed)


def big_head(size: int, pieces: int):
    """An answer whose head holds one header of ``size`` bytes, sent in ``pieces`` writes."""
    head = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * size + b"\r\nContent-Length: 2\r\n\r\nok"
    step = -(-len(head) // pieces)

    def script(conn: Conn) -> None:
        conn.read_request()
        for start in range(0, len(head), step):
            if not conn.send(head[start:start + step]):
                return
            time.sleep(0.01)
        conn.wait_closed()
    return script


@pytest.mark.parametrize("pieces", [1, 20], ids=["at-once", "in-pieces"])
def test_a_head_larger_than_the_cap_is_refused(h, pieces):
    peer = h.peer(big_head(http11.MAX_HEAD_BYTES + 16 * 1024, pieces))
    client = h.client()
    with pytest.raises(ProtocolError, match="response head larger than 65536 bytes"):
        h.post(client, peer.url())
    assert peer.wait_for(lambda p: 0 in p.client_closed)


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Many: %05d\r\n" % n for n in range(6000)),
    b"HTTP/1.1 200 " + b"O" * (70 * 1024) + b"\r\n",
], ids=["many-headers", "long-reason"])
def test_a_head_adding_up_past_the_cap_is_refused(h, head):
    peer = h.peer(once(head + b"Content-Length: 0\r\n\r\n", then_close=False))
    with pytest.raises(ProtocolError, match="response head larger"):
        h.post(h.client(), peer.url())


def test_a_head_just_under_the_cap_is_read(h):
    peer = h.peer(big_head(http11.MAX_HEAD_BYTES - 1000, 1))
    response = h.post(h.client(), peer.url())
    assert (response.status, response.body) == (200, b"ok")


# -- timeouts --------------------------------------------------------------------------

def silent(conn: Conn) -> None:
    """Accepts, reads the request, never answers (until the client gives up)."""
    conn.read_request()
    conn.wait_closed(30)


def timed_post(h: Harness, client: http11.Client, url: str, limit: str, message: str
               ) -> float:
    """How long a POST took to fail with the ``limit`` timeout, whose message is ``message``."""
    started = time.monotonic()
    with pytest.raises(http11.Timeout) as raised:
        h.post(client, url)
    assert (raised.value.limit, str(raised.value)) == (limit, message)
    return time.monotonic() - started


def test_a_peer_trickling_bytes_hits_the_total_timeout(h):
    peer = h.peer(trickle_head)
    client = h.client(read_timeout=5.0, total_timeout=0.6)
    took = timed_post(h, client, peer.url(), "total", "response not complete within 0.6 s")
    assert 0.6 <= took < 5.0
    assert peer.wait_for(lambda p: 0 in p.client_closed)
    assert h.idle(client) == 0


def test_a_peer_that_never_answers_hits_the_read_timeout(h):
    peer = h.peer(silent)
    client = h.client(read_timeout=0.3, total_timeout=20.0)
    took = timed_post(h, client, peer.url(), "read", "no response within 0.3 s")
    assert 0.3 <= took < 5.0
    assert peer.wait_for(lambda p: 0 in p.client_closed)


def test_a_peer_that_stops_mid_response_hits_the_read_timeout(h):
    def stalls(conn: Conn) -> None:
        conn.read_request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Len")
        conn.wait_closed(30)

    client = h.client(read_timeout=0.3, total_timeout=20.0)
    took = timed_post(h, client, h.peer(stalls).url(), "read",
                      "response stalled: no further bytes within 0.3 s")
    assert 0.3 <= took < 5.0


def test_a_connect_that_hangs_hits_the_connect_timeout(h, full_backlog):
    client = h.client(connect_timeout=0.3)
    took = timed_post(h, client, full_backlog.url(), "connect",
                      "connect did not complete within 0.3 s")
    assert 0.3 <= took < 5.0


def test_the_read_timeout_restarts_with_every_byte(h):
    """Bytes every 50 ms keep a 0.3 s read timeout from firing; the answer completes."""
    def script(conn: Conn) -> None:
        conn.read_request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n")
        for _ in range(20):
            time.sleep(0.05)
            conn.send(b"x")
        conn.wait_closed()

    peer = h.peer(script)
    response = h.post(h.client(read_timeout=0.3, total_timeout=10.0), peer.url())
    assert response.body == b"x" * 20


# -- the body cap ----------------------------------------------------------------------

def endless_body(chunked: bool):
    """A body of 8 MB announced (or chunked), written until the client hangs up."""
    def script(conn: Conn) -> None:
        conn.read_request()
        if chunked:
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            piece = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
        else:
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 8388608\r\n\r\n")
            piece = b"x" * 0x10000
        for _ in range(128):
            if not conn.send(piece):
                break
        conn.wait_closed()
    return script


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_a_huge_body_is_cut_at_the_cap_and_its_connection_closed(h, chunked):
    peer = h.peer(endless_body(chunked))
    client = h.client(max_body=100_000)
    response = h.post(client, peer.url())
    assert response.status == 200
    assert response.truncated
    assert response.body == b"x" * 100_000
    assert h.idle(client) == 0
    assert peer.wait_for(lambda p: 0 in p.client_closed)
    # The next request cannot be answered by the rest of that body: a new connection.
    h.post(client, peer.url())
    assert peer.accepts == 2


def test_a_body_exactly_at_the_cap_is_whole(h):
    peer = h.peer(once(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"y" * 1000,
                       then_close=False))
    client = h.client(max_body=1000)
    response = h.post(client, peer.url())
    assert (response.body, response.truncated) == (b"y" * 1000, False)
    assert h.idle(client) == 1


# -- idle connections ------------------------------------------------------------------

def test_idle_connections_are_closed_after_keepalive(h):
    peer = h.peer()
    client = h.client(keepalive=0.2)
    h.post(client, peer.url())
    assert h.idle(client) == 1
    assert wait_until(lambda: h.idle(client) == 0, timeout=5)
    assert peer.wait_for(lambda p: 0 in p.client_closed, timeout=5)
    h.post(client, peer.url())
    assert peer.accepts == 2


def test_the_pool_keeps_max_idle_connections_in_all(h):
    peers = [h.peer() for _ in range(4)]
    client = h.client(max_idle=2)
    for peer in peers:
        assert h.post(client, peer.url()).status == 202
    assert h.idle(client) == 2
    closed = [p for p in peers if p.wait_for(lambda q: 0 in q.client_closed, timeout=0.5)]
    assert closed == peers[2:]  # the first two were pooled, the later ones closed after use


def test_a_connection_in_use_is_kept_past_keepalive(h):
    peer = h.peer()
    client = h.client(keepalive=0.2)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        h.post(client, peer.url())
    assert peer.accepts == 1


# -- TLS -------------------------------------------------------------------------------

def test_https_names_the_host_and_keeps_the_connection(h, ca):
    peer = h.peer(tls=ca.server)
    client = h.client(ssl_context=trusting(ca))
    for _ in range(3):
        assert h.post(client, peer.origin("localhost") + "/inbox/").status == 202
    assert peer.accepts == 1
    assert peer.conns[0].server_name == "localhost"  # SNI
    assert {r.headers["host"] for r in peer.requests} == {f"localhost:{peer.port}"}


def test_https_to_an_ip_address_checks_it_against_the_certificate(h, ca):
    peer = h.peer(tls=ca.server)
    response = h.post(h.client(ssl_context=trusting(ca)), peer.url("/"))
    assert response.status == 202
    assert peer.conns[0].server_name is None  # no SNI for an address


def test_https_refuses_a_certificate_from_an_unknown_authority(h, ca):
    import trustme

    peer = h.peer(tls=ca.server)
    client = h.client(ssl_context=trusting(trustme.CA()))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        h.post(client, peer.origin("localhost") + "/inbox/")
    assert peer.requests == []


def test_https_refuses_a_certificate_for_another_name(h, ca):
    peer = h.peer(tls=ca.server)
    client = h.client(ssl_context=trusting(ca))
    with pytest.raises(ssl.SSLCertVerificationError, match="[Hh]ostname mismatch"):
        h.post(client, peer.origin("inbox.example") + "/inbox/")
    assert peer.requests == []


def test_the_default_context_trusts_ssl_cert_file(h, ca, monkeypatch, tmp_path):
    """How a deployment (or a test) adds a private CA: the environment, read when the
    client first needs its context."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    peer = h.peer(tls=ca.server)
    assert h.post(h.client(), peer.origin("localhost") + "/inbox/").status == 202


# -- what goes on the wire -------------------------------------------------------------

def test_the_request_as_written(h):
    peer = h.peer()
    h.post(h.client(), peer.url("/inbox/?a=1&b=%2F"), body=b"x" * 3000)
    (request,) = peer.requests
    assert request.method == "POST"
    assert request.target == "/inbox/?a=1&b=%2F"
    assert request.headers["host"] == f"127.0.0.1:{peer.port}"
    assert request.headers["content-length"] == "3000"
    assert request.headers["user-agent"] == "tests"
    assert request.body == b"x" * 3000


def test_a_given_host_header_replaces_the_urls(h):
    peer = h.peer()
    h.post(h.client(), peer.url(), host="inbox.example")
    assert peer.requests[0].headers["host"] == "inbox.example"


def test_an_idn_host_goes_out_as_punycode(h):
    """The name is resolved, connected to and named in Host in its ASCII form."""
    peer = h.peer()
    h.post(h.client(), f"http://bücher.example:{peer.port}/inbox/ä?q=ü")
    assert h.resolved == ["xn--bcher-kva.example"]
    (request,) = peer.requests
    assert request.headers["host"] == f"xn--bcher-kva.example:{peer.port}"
    assert request.target == "/inbox/%C3%A4?q=%C3%BC"


def test_an_ipv6_literal_is_bracketed_in_host(h):
    try:
        peer = h.peer(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    h.post(h.client(), f"http://[::1]:{peer.port}/inbox/")
    assert h.resolved == ["::1"]
    assert peer.requests[0].headers["host"] == f"[::1]:{peer.port}"


@pytest.mark.parametrize(("url", "key", "host_header", "path"), [
    ("http://remote.example/inbox", ("http", "remote.example", 80), "remote.example", "/inbox"),
    ("https://remote.example:443/inbox", ("https", "remote.example", 443), "remote.example",
     "/inbox"),
    ("http://remote.example:443/inbox", ("http", "remote.example", 443),
     "remote.example:443", "/inbox"),
    ("https://remote.example:80/", ("https", "remote.example", 80), "remote.example:80", "/"),
    ("HTTPS://Remote.EXAMPLE", ("https", "remote.example", 443), "remote.example", "/"),
    ("http://remote.example?x=1", ("http", "remote.example", 80), "remote.example", "/?x=1"),
    ("http://remote.example/a/b?x=1&y=%2F#frag", ("http", "remote.example", 80),
     "remote.example", "/a/b?x=1&y=%2F"),
    ("https://bücher.example/inbox", ("https", "xn--bcher-kva.example", 443),
     "xn--bcher-kva.example", "/inbox"),
    ("https://BÜCHER.example:8443/", ("https", "xn--bcher-kva.example", 8443),
     "xn--bcher-kva.example:8443", "/"),
    ("https://ｌｏｃａｌｈｏｓｔ/", ("https", "localhost", 443), "localhost", "/"),
    ("http://remote.example/in box/é", ("http", "remote.example", 80), "remote.example",
     "/in%20box/%C3%A9"),
    ("http://remote.example/users/ü?tag=ç&x=%41", ("http", "remote.example", 80),
     "remote.example", "/users/%C3%BC?tag=%C3%A7&x=%41"),
    ("http://remote.example/~a/b;c=d/@e:f", ("http", "remote.example", 80), "remote.example",
     "/~a/b;c=d/@e:f"),
    ("http://[::1]/inbox", ("http", "::1", 80), "[::1]", "/inbox"),
    ("https://[2001:DB8::1]:8443/inbox?q", ("https", "2001:db8::1", 8443),
     "[2001:db8::1]:8443", "/inbox?q"),
    ("http://127.0.0.1:8080/inbox", ("http", "127.0.0.1", 8080), "127.0.0.1:8080", "/inbox"),
])
def test_target(url, key, host_header, path):
    where = target(url)
    assert where.key == key
    assert where.host_header == host_header
    assert where.path == path
    assert where.path.isascii() and where.host_header.isascii()
    assert target(where.url) == where  # what is signed parses to what is sent


@pytest.mark.parametrize(("url", "error"), [
    ("ftp://remote.example/", "not an http"),
    ("remote.example/inbox", "not an http"),
    ("http:///inbox", "no host"),
])
def test_target_refuses(url, error):
    with pytest.raises(ValueError, match=error):
        target(url)
