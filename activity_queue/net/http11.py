"""A lean HTTP/1.1 client for the one thing deliveries do: POST a small body, read a capped answer.

A general-purpose client spends most of a delivery's CPU on what an inbox
POST never uses (cookie jars, multidict headers, tracing hooks, a task per
request); measured on two cores, aiohttp took about four times the CPU per
POST of this client. Here a request is one buffer written to a pooled
connection, the answer is parsed by llhttp (``httptools``), and one timer per
request enforces both the read and the total timeout. Each limit that runs out raises
:class:`Timeout`, which says which one it was.

Safety is the caller's: :class:`Client` connects only to the addresses its
resolver returns, so an address check made there holds at connection time.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlsplit

import httptools

from .addresses import ascii_host

#: Response head (status line and headers) larger than this is refused.
MAX_HEAD_BYTES = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}
#: Seconds a loop timer may fire before its due time: uvloop's (libuv's) clock counts
#: whole milliseconds, so a timeout armed for ``t`` can fire just under ``t``. Timeouts
#: are armed this much later, so that none ends before its limit.
TIMER_SLACK = 0.001
PATH_SAFE = "/%:@!$&'()*+,;=?~-._"

#: ``resolve(host, port) -> [address, ...]``: the addresses it is safe to connect to.
Resolve = Callable[[str, int], Awaitable[list[str]]]


class ProtocolError(ConnectionError):
    """The peer answered something that is not a usable HTTP/1.x response."""


class Timeout(TimeoutError):
    """One of the client's limits ran out: ``limit`` says which (``"connect"``, ``"read"``
    or ``"total"``) and ``seconds`` its value, so that the caller can name the setting
    behind it; the message says what did not happen in time."""

    def __init__(self, limit: str, seconds: float, message: str) -> None:
        super().__init__(f"{message} within {seconds:g} s")
        self.limit = limit
        self.seconds = seconds


class ConnectionClosed(ConnectionError):
    """The connection ended before a complete response."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        #: Whether any byte of a response arrived (if not, a pooled connection was stale).
        self.answered = answered


@dataclass(slots=True)
class Response:
    status: int
    #: Header names lower-cased; a repeated header keeps its last value.
    headers: dict[str, str]
    body: bytes
    #: The body was longer than the cap and was cut (the connection is then closed).
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Target:
    """What a URL means on the wire: where to connect and what to write."""

    scheme: str
    host: str  # ASCII (IDNA), no brackets
    port: int
    path: str  # path and query, percent-encoded
    host_header: str

    @property
    def key(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def url(self) -> str:
        """The URL as written on the wire: what a signature of the request must cover."""
        return f"{self.scheme}://{self.host_header}{self.path}"


@lru_cache(maxsize=4096)
def target(url: str) -> Target:
    """Parse an http(s) URL once; inbox URLs repeat, so the result is cached."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"not an http(s) URL: {url!r}")
    host = ascii_host(parts.hostname or "")
    if not host:
        raise ValueError(f"no host in {url!r}")
    port = parts.port or DEFAULT_PORTS[scheme]
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    if not path.isascii() or " " in path:
        path = quote(path, safe=PATH_SAFE)
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == DEFAULT_PORTS[scheme] else f"{shown}:{port}"
    return Target(scheme, host, port, path, host_header)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one request at a time, never pipelined."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_body: int) -> None:
        self.loop = loop
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.waiter: asyncio.Future | None = None
        self.last_data = 0.0
        self._new_message()

    def _new_message(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.size = 0
        self.head_bytes = 0
        self.head_size = 0
        self.head_done = False
        self.answered = False

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted for reuse
            return
        self.last_data = self.loop.time()
        self.answered = True
        if not self.head_done:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"invalid HTTP response: {exc}"))
        else:
            if not self.head_done and self.head_bytes > MAX_HEAD_BYTES:
                self._fail(ProtocolError(f"response head larger than {MAX_HEAD_BYTES} bytes"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.head_done and "content-length" not in self.headers \
                and "chunked" not in self.headers.get("transfer-encoding", "").lower():
            self._finish(keep=False)  # a body delimited by the end of the connection
            return
        reason = f": {exc}" if exc else ""
        where = "mid-response" if self.answered else "before any response"
        waiter.set_exception(ConnectionClosed(f"connection closed {where}{reason}",
                                              answered=self.answered))

    # -- httptools callbacks -----------------------------------------------

    def on_message_begin(self) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()  # a second answer to one request: do not pool this connection

    def on_status(self, status: bytes) -> None:
        self.head_size += len(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done = True
        # A head that arrives whole in one read never trips the check in data_received.
        if self.head_size > MAX_HEAD_BYTES:
            self._fail(ProtocolError(f"response head larger than {MAX_HEAD_BYTES} bytes"))

    def on_body(self, body: bytes) -> None:
        room = self.max_body - self.size
        if len(body) > room:
            if room > 0:
                self.chunks.append(body[:room])
            self.size = self.max_body
            self._finish(keep=False, truncated=True)
            return
        self.chunks.append(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:  # an interim answer (100 Continue…): wait for the real one
            self._new_message()
            self.answered = True  # the server has the request: it must not be sent again
            return
        self._finish(keep=self.parser.should_keep_alive())

    # -- request side ------------------------------------------------------

    def _finish(self, *, keep: bool, truncated: bool = False) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if not keep:
            self.close()
        waiter.set_result(Response(self.status, self.headers, b"".join(self.chunks), truncated))

    def _fail(self, exc: Exception) -> None:
        self.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def exchange(self, request: bytes, read_timeout: float, total_timeout: float
                       ) -> Response:
        """Write ``request`` and wait for the answer: the read timeout restarts on every
        byte received, the total one does not; one timer serves both."""
        loop = self.loop
        self._new_message()
        self.waiter = waiter = loop.create_future()
        start = self.last_data = loop.time()
        give_up = start + total_timeout
        timer: list[asyncio.TimerHandle] = []

        def check() -> None:
            if waiter.done():
                return
            read_due = self.last_data + read_timeout
            due = min(read_due, give_up)
            if loop.time() < due:
                timer[0] = loop.call_at(due + TIMER_SLACK, check)
                return
            self.close()
            if give_up < read_due:
                waiter.set_exception(Timeout("total", total_timeout, "response not complete"))
            elif self.answered:
                waiter.set_exception(Timeout("read", read_timeout,
                                             "response stalled: no further bytes"))
            else:
                waiter.set_exception(Timeout("read", read_timeout, "no response"))

        timer.append(loop.call_at(min(start + read_timeout, give_up) + TIMER_SLACK, check))
        self.transport.write(request)
        try:
            return await waiter
        finally:
            timer[0].cancel()
            self.waiter = None


class Client:
    """Pooled connections per origin; the pool forgets connections idle for ``keepalive`` s
    and keeps ``max_idle`` at most in all, so that a fan-out to thousands of servers does
    not hold thousands of sockets open."""

    def __init__(self, resolve: Resolve, *, connect_timeout: float, read_timeout: float,
                 total_timeout: float, max_body: int, keepalive: float = 30.0,
                 max_idle: int = 256, ssl_context: ssl.SSLContext | None = None) -> None:
        self.resolve = resolve
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self.max_body = max_body
        self.keepalive = keepalive
        self.max_idle = max_idle
        self._idle_count = 0
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def post(self, url: str, head: bytes, body: bytes, host: str | None = None
                   ) -> Response:
        """POST ``body`` with the header lines ``head`` (each ending in CRLF).

        ``head`` holds neither ``Host`` (``host``, or the URL's) nor ``Content-Length``.
        A pooled connection that turns out to be closed by the server is
        replaced once, since nothing of the request can have been handled.
        """
        return await self.request(b"POST", url, head, body, host)

    async def request(self, method: bytes, url: str, head: bytes, body: bytes = b"",
                      host: str | None = None) -> Response:
        """:meth:`post` with another method (``GET``: a probe of a host that stopped
        answering). Not ``HEAD``: its response would be read as if it had a body."""
        where = target(url)
        request = b"".join((method, b" ", where.path.encode("ascii"), b" HTTP/1.1\r\nHost: ",
                            (host or where.host_header).encode("ascii"), b"\r\n", head,
                            b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n\r\n",
                            body))
        for attempt in range(2):
            conn, reused = await self._acquire(where)
            self._busy.add(conn)
            try:
                response = await conn.exchange(request, self.read_timeout, self.total_timeout)
            except ConnectionClosed as exc:
                conn.close()
                if reused and not exc.answered and attempt == 0:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            finally:
                self._busy.discard(conn)
            if not conn.closed:
                self._release(where.key, conn)
            return response
        raise AssertionError("unreachable")

    async def _acquire(self, where: Target) -> tuple[_Connection, bool]:
        idle = self._idle.get(where.key)
        if idle:
            limit = asyncio.get_running_loop().time() - self.keepalive
            while idle:
                conn = idle.pop()
                self._idle_count -= 1
                if not conn.closed and conn.idle_since > limit \
                        and not conn.transport.is_closing():
                    return conn, True
                conn.close()
        try:
            # Armed a tick late, so that it never fires before connect_timeout.
            async with asyncio.timeout(self.connect_timeout + TIMER_SLACK) as limit:
                return await self._connect(where), False
        except TimeoutError:
            if limit.expired():  # not a TimeoutError of the system's own (ETIMEDOUT)
                raise Timeout("connect", self.connect_timeout,
                              "connect did not complete") from None
            raise

    async def _connect(self, where: Target) -> _Connection:
        loop = asyncio.get_running_loop()
        addresses = await self.resolve(where.host, where.port)
        tls: dict[str, Any] = {}
        if where.scheme == "https":
            tls = {"ssl": self.ssl_context, "server_hostname": where.host}
        error: OSError | None = None
        for address in addresses:
            try:
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self.max_body), address, where.port, **tls)
                return conn
            except OSError as exc:
                error = exc
        raise error or OSError(f"no address to connect to for {where.host}")

    def _release(self, key: tuple[str, str, int], conn: _Connection) -> None:
        if self._idle_count >= self.max_idle:
            conn.close()
            return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        self._idle.setdefault(key, []).append(conn)
        self._idle_count += 1
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.keepalive, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle too long, so that quiet hosts hold no sockets."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        limit = loop.time() - self.keepalive
        for key in list(self._idle):
            kept = [c for c in self._idle[key] if not c.closed and c.idle_since > limit]
            for conn in self._idle[key]:
                if conn not in kept:
                    conn.close()
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        self._idle_count = self.idle_connections()
        if self._idle:
            self._sweeper = loop.call_later(self.keepalive, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        self._idle_count = 0
        for conn in list(self._busy):
            conn.close()

    def idle_connections(self) -> int:
        return sum(len(c) for c in self._idle.values())
