"""Blocking fetches (``requests``) that end at a deadline, however slowly the server answers.

``requests`` times each wait for bytes, not the exchange: a server that sends
a byte of its headers, its body or its TLS handshake just before each read
timeout keeps a fetch going for as long as it likes. The inbox fetches a
signer's key and an unsigned activity's object while the sender waits, so a
sender that serves them so would hold the thread handling its request, and a
few such senders every thread of the site. A :class:`Deadline` shuts down
the sockets its session opened once the time is up, which ends any read in
progress at once.
"""

from __future__ import annotations

import socket
import threading
import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()


class Deadline:
    """The time a fetch may take in all, redirects included.

    Send the fetch's requests through :attr:`session` inside ``with deadline:``.
    When the time is up, :attr:`expired` turns true and the sockets of those
    requests are shut down, so the request in progress fails (a
    ``requests.RequestException``).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._ends = time.monotonic() + seconds
        #: Duplicates of the sockets opened under this deadline: shutting one down ends
        #: reads on the original too, whatever urllib3 or ssl made of that one since.
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self.session = requests.Session()
        adapter = _Adapter()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def remaining(self) -> float:
        return self._ends - time.monotonic()

    def __enter__(self) -> Deadline:
        self._outer = getattr(_current, "deadline", None)
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        _current.deadline = self._outer
        self.session.close()
        with self._lock:
            for copy in self._sockets:
                copy.close()
            self._sockets = []

    def _watch(self, sock: socket.socket) -> None:
        copy = sock.dup()
        with self._lock:
            self._sockets.append(copy)
            if self.expired:
                _shut_down(copy)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for copy in self._sockets:
                _shut_down(copy)


def _shut_down(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the peer
        pass


class _Watched:
    """A urllib3 connection whose socket the deadline of the fetch in progress watches."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        deadline = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline._watch(sock)
        return sock


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
