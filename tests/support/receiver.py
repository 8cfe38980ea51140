"""A real HTTP server on loopback that plays remote inboxes for the tests.

Each path answers according to a rule set by the test (status, headers,
delay, or never answering); every request that arrives is recorded.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Rule:
    status: int = 202
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: Answer with these statuses in turn; the last one repeats.
    sequence: list[int] | None = None
    #: Hold the answer until this returns true (checked every few ms, for up to hold_max s).
    hold: Callable[[], bool] | None = None
    hold_max: float = 30.0
    #: Answer 401 to the requests this refuses, as an inbox that checks signatures does.
    accept: Callable[[Received], bool] | None = None


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"

    def json(self):
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that hangs up early (capped read, timeout) is expected, not news."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Receiver:
    def __init__(self, host: str = "127.0.0.1", events: list | None = None) -> None:
        self.rules: dict[str, Rule] = {}
        #: GET path -> Rule (status and body), e.g. a resource document naming its inbox.
        self.documents: dict[str, Rule] = {}
        self.fetched: list[str] = []
        self.received: list[Received] = []
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.release = threading.Event()
        #: ("request" | "response", url) in the order they happened; receivers given
        #: the same list share one timeline.
        self.events: list[tuple[str, str]] = [] if events is None else events
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                path = self.path
                got = Received(path, dict(self.headers), body, self.command)
                with receiver.cond:
                    receiver.received.append(got)
                    receiver.events.append(("request", receiver.base + path))
                    n = receiver.calls.get(path, 0)
                    receiver.calls[path] = n + 1
                    receiver.cond.notify_all()
                rule = receiver.rules.get(path, Rule())
                if rule.delay < 0:  # black hole: hold the connection until released
                    receiver.release.wait(60)
                    return
                if rule.hold is not None:
                    deadline = time.monotonic() + rule.hold_max
                    while not rule.hold() and time.monotonic() < deadline:
                        time.sleep(0.005)
                if rule.delay:
                    time.sleep(rule.delay)
                status = rule.status
                if rule.sequence:
                    status = rule.sequence[min(n, len(rule.sequence) - 1)]
                if rule.accept is not None and not rule.accept(got):
                    status = 401
                self.send_response(status)
                for key, value in rule.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(rule.body)))
                self.end_headers()
                self.wfile.write(rule.body)
                with receiver.cond:
                    receiver.events.append(("response", receiver.base + path))
                    receiver.cond.notify_all()

            do_PUT = do_POST

            def do_GET(self):  # noqa: N802
                rule = receiver.documents.get(self.path)
                if rule is None:  # a redirect that changes the method shows up as a request
                    return self.do_POST()
                with receiver.cond:
                    receiver.fetched.append(self.path)
                    receiver.cond.notify_all()
                if rule.delay:
                    time.sleep(rule.delay)
                self.send_response(rule.status)
                for key, value in rule.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/ld+json")
                self.send_header("Content-Length", str(len(rule.body)))
                self.end_headers()
                self.wfile.write(rule.body)

            def log_message(self, *args):
                pass

        self.server = _Server((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def document(self, path: str, body: dict | None = None, status: int = 200,
                 **kwargs) -> str:
        """Serve ``body`` as JSON-LD at ``path`` (GET); returns its URL."""
        payload = json.dumps(body).encode() if body is not None else b""
        self.documents[path] = Rule(status=status, body=payload, **kwargs)
        return self.url(path)

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
        return True

    def count(self, kind: str) -> int:
        """How many requests arrived at, or responses left, this receiver."""
        with self.lock:
            return sum(1 for k, url in self.events if k == kind and url.startswith(self.base + "/"))

    def bodies(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [r.json() for r in self.received if path is None or r.path == path]
