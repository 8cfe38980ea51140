"""A raw TCP (or TLS) peer on loopback whose every byte is scripted by the test.

:class:`tests.support.receiver.Receiver` is a well-behaved HTTP server; this one is
for what a real server can do that a well-behaved one never does: close an
idle connection, answer garbage, trickle bytes, send a body shorter than its
Content-Length. Each accepted connection runs ``script(conn)`` in a thread of
its own; the peer counts connections and records every request it reads.
:class:`FullBacklog` is what no script can do: a connect that never completes.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Request:
    """One request as it arrived: ``conn`` is the index of its connection (0, 1, …)."""

    conn: int
    method: str
    target: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class Conn:
    """The server's end of one connection, handed to the script."""

    peer: Peer
    index: int
    sock: socket.socket
    buffer: bytes = b""
    #: The name the client asked for in its TLS hello (SNI), if any.
    server_name: str | None = None
    requests: list[Request] = field(default_factory=list)

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False at the deadline, at end of stream, or when stopped."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.peer.stopped.is_set():
                return False
            self.sock.settimeout(min(remaining, 0.1))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                self.peer._closed_by_client(self)
                return False
            self.buffer += data
            return True

    def read_request(self, timeout: float = 10.0) -> Request | None:
        """The next request on this connection, or None if the client closed it first."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill(deadline):
                return None
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = line.split(" ", 2)
        headers = {}
        for item in lines:
            name, _, value = item.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", 0))
        while len(self.buffer) < length:
            if not self._fill(deadline):
                return None
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        request = Request(self.index, method, target, headers, body)
        self.requests.append(request)
        self.peer._record(request)
        return request

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """Wait until the client closes this connection (anything it sends is dropped)."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            self.buffer = b""
        return self.index in self.peer.client_closed

    def send(self, data: bytes) -> bool:
        """Write ``data``; False if the client has gone away."""
        try:
            self.sock.sendall(data)
        except OSError:
            self.peer._closed_by_client(self)
            return False
        return True

    def answer(self, status: int = 202, body: bytes = b"{}", headers: dict | None = None,
               reason: str = "OK") -> bool:
        """A complete HTTP/1.1 response with a Content-Length."""
        lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def close(self) -> None:
        """Close the connection (a FIN, as a server's keep-alive timeout does)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.peer._closed_by_server(self)


Script = Callable[[Conn], None]


def keep_alive(conn: Conn) -> None:
    """A well-behaved keep-alive server: 202 to every request until the client closes."""
    while conn.read_request():
        conn.answer(202)


def trickle_head(conn: Conn) -> None:
    """Slowloris: a head that never ends, one byte every 50 ms (for at most 30 s), each byte
    well within any read timeout."""
    conn.read_request()
    conn.send(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and conn.send(b"a"):
        time.sleep(0.05)


def trickle_body(conn: Conn) -> None:
    """A JSON document of a megabyte that arrives one space every 50 ms (for at most 30 s)."""
    conn.read_request()
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/activity+json\r\n"
              b"Content-Length: 1000000\r\n\r\n{")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and conn.send(b" "):
        time.sleep(0.05)


def drop_the_second_request(conn: Conn) -> None:
    """The race a keep-alive timeout makes: the first connection answers one request, then
    reads the next and hangs up without a word; later connections behave."""
    if conn.index == 0:
        conn.read_request()
        conn.answer(202)
        conn.read_request()
        conn.close()
    else:
        keep_alive(conn)


class Peer:
    """Listens on loopback; runs ``script`` (see :data:`Script`) for every connection."""

    def __init__(self, script: Script = keep_alive, *, host: str = "127.0.0.1",
                 tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.cond = threading.Condition()
        self.stopped = threading.Event()
        self.conns: list[Conn] = []
        self.requests: list[Request] = []
        #: Indexes of the connections the client closed (seen as end of stream).
        self.client_closed: set[int] = set()
        #: Indexes of the connections the script closed.
        self.server_closed: set[int] = set()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(64)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.scheme = "https" if tls else "http"
        self.base = self.origin(host)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._names: dict[int, str | None] = {}
        if tls is not None:
            tls.sni_callback = self._remember_name

    def _remember_name(self, sock: ssl.SSLSocket, name: str | None, _ctx: object) -> None:
        self._names[id(sock)] = name

    def origin(self, name: str) -> str:
        """This peer's origin under another name (e.g. "localhost", for a certificate)."""
        shown = f"[{name}]" if ":" in name else name
        return f"{self.scheme}://{shown}:{self.port}"

    def url(self, path: str = "/inbox/") -> str:
        return self.base + path

    @property
    def accepts(self) -> int:
        with self.cond:
            return len(self.conns)

    def start(self) -> Peer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()
        with self.cond:
            conns = list(self.conns)
        for conn in conns:
            conn.close()

    def wait_for(self, predicate: Callable[[Peer], object], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
        return True

    def _accept_loop(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.cond:
                conn = Conn(self, len(self.conns), sock)
                self.conns.append(conn)
                self.cond.notify_all()
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: Conn) -> None:
        if self.tls is not None:
            try:
                conn.sock.settimeout(10)
                conn.sock = self.tls.wrap_socket(conn.sock, server_side=True)
            except OSError:  # e.g. the client refused our certificate
                conn.close()
                return
            conn.server_name = self._names.pop(id(conn.sock), None)
        try:
            self.script(conn)
        except OSError:
            pass

    def _record(self, request: Request) -> None:
        with self.cond:
            self.requests.append(request)
            self.cond.notify_all()

    def _closed_by_server(self, conn: Conn) -> None:
        with self.cond:
            self.server_closed.add(conn.index)
            self.cond.notify_all()

    def _closed_by_client(self, conn: Conn) -> None:
        with self.cond:
            self.client_closed.add(conn.index)
            self.cond.notify_all()


class FullBacklog:
    """A loopback listener that never accepts, its backlog already taken by one connection:
    Linux then drops every further SYN, so a connect hangs as to a black-holed address."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(0)  # room for one connection waiting to be accepted
        self.port = self.listener.getsockname()[1]
        self.base = f"http://{host}:{self.port}"
        self.held = [socket.create_connection((host, self.port), timeout=5)]
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.05)
        try:
            probe.connect((host, self.port))
            hangs = False
        except TimeoutError:
            hangs = True
        finally:
            probe.close()
        if not hangs:
            self.close()
            raise RuntimeError("this system completes connects beyond the listen backlog")

    def url(self, path: str = "/inbox/") -> str:
        return self.base + path

    def close(self) -> None:
        for sock in self.held:
            sock.close()
        self.listener.close()
