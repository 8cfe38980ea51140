"""A real HTTP server on loopback that plays remote inboxes for the tests.

Each path answers according to a rule set by the test (status, headers,
delay, or never answering); every request that arrives is recorded.
"""

from __future__ import annotations

import json
import threading
import time
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


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class Receiver:
    def __init__(self) -> None:
        self.rules: dict[str, Rule] = {}
        self.received: list[Received] = []
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                path = self.path
                with receiver.cond:
                    receiver.received.append(Received(path, dict(self.headers), body))
                    n = receiver.calls.get(path, 0)
                    receiver.calls[path] = n + 1
                    receiver.cond.notify_all()
                rule = receiver.rules.get(path, Rule())
                if rule.delay < 0:  # black hole: hold the connection until released
                    receiver.release.wait(60)
                    return
                if rule.delay:
                    time.sleep(rule.delay)
                status = rule.status
                if rule.sequence:
                    status = rule.sequence[min(n, len(rule.sequence) - 1)]
                self.send_response(status)
                for key, value in rule.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(rule.body)))
                self.end_headers()
                self.wfile.write(rule.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

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

    def bodies(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [r.json() for r in self.received if path is None or r.path == path]
