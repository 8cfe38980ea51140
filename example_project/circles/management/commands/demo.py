"""``python manage.py demo``: two linked-data sites on loopback, federating.

Each site is this example project in its own ``runserver`` process with its
own SQLite database (in a temporary directory) and its own ``SITE_URL``; the
in-process worker of each delivers its backlinks. The command drives both
through their demo API as a user would, prints what happens, and stops every
process it started, whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from django.core.management.base import BaseCommand, CommandError

import example_project

#: The repository root, where manage.py is.
ROOT = Path(example_project.__file__).resolve().parent.parent

#: Short delays so that retries, the circuit breaker and catch-up fit in seconds.
DEMO_ENV = {
    "AQ_BACKOFF": "0.25",
    "AQ_BACKOFF_MAX": "1",
    "AQ_CIRCUIT_COOLDOWN": "0.5",
    "AQ_MAX_ATTEMPTS": "10",
    "AQ_TIMEOUT": "2",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Site:
    """One example site in a subprocess."""

    name: str
    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name.lower()}.log"

    def env(self) -> dict[str, str]:
        return {**os.environ, **DEMO_ENV, "DJANGO_SETTINGS_MODULE": "example_project.settings",
                "SITE_URL": self.url, "EXAMPLE_DEMO_API": "1", "PYTHONUNBUFFERED": "1",
                "EXAMPLE_DB": str(self.directory / f"{self.name.lower()}.sqlite3")}

    def command(self, *args: str) -> list[str]:
        return [sys.executable, str(ROOT / "manage.py"), *args]

    def migrate(self) -> subprocess.Popen:
        return subprocess.Popen(self.command("migrate", "--noinput"), env=self.env(),
                                cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command("runserver", "--noreload", "--skip-checks",
                             f"127.0.0.1:{self.port}"),
                env=self.env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CommandError(f"site {self.name} exited; see {self.log}")
            try:
                if requests.get(self.url + "/demo/state/", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise CommandError(f"site {self.name} did not answer within 30 s; see {self.log}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def post(self, path: str, **data: Any) -> dict:
        response = requests.post(self.url + path, json=data, timeout=10)
        response.raise_for_status()
        return response.json()

    def state(self) -> dict:
        response = requests.get(self.url + "/demo/state/", timeout=10)
        response.raise_for_status()
        return response.json()


class RetiredServer:
    """A server that moved away: its user documents remain, its inbox answers 410 Gone."""

    def __init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = json.dumps({"@id": server.url + self.path, "@type": "foaf:user",
                                   "inbox": server.url + "/inbox/"}).encode()
                self._answer(200, body)

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer(410, b'{"error": "this server is gone"}')

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/ld+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Command(BaseCommand):
    help = ("Run two example sites on loopback, link their objects, take one down and bring "
            "it back, and print what the activity queue did.")
    requires_system_checks: list = []

    def add_arguments(self, parser) -> None:
        parser.add_argument("--keep", action="store_true",
                            help="Keep the temporary directory with both databases and logs.")

    def handle(self, *args: Any, keep: bool = False, **options: Any) -> None:
        started = time.monotonic()
        directory = Path(tempfile.mkdtemp(prefix="activity-queue-demo-"))
        a, b = Site("A", directory), Site("B", directory)
        retired = RetiredServer()
        try:
            self.run(a, b, retired)
        except BaseException:
            for site in (a, b):
                if site.log.exists():
                    tail = site.log.read_text(errors="replace").splitlines()[-15:]
                    self.stderr.write(f"--- last lines of site {site.name}'s log:\n"
                                      + "\n".join(tail))
            raise
        finally:
            a.stop()
            b.stop()
            retired.stop()
            if keep:
                python = _python()
                self.say(f"\nKept {directory}: both databases and logs. To browse site A's log:\n"
                         f"  export EXAMPLE_DB={directory / 'a.sqlite3'}\n"
                         f"  {python} manage.py createsuperuser && {python} manage.py runserver\n"
                         "  then open http://127.0.0.1:8000/admin/activity_queue/activity/")
            else:
                shutil.rmtree(directory, ignore_errors=True)
        self.say(f"\nDone in {time.monotonic() - started:.1f} s; nothing is left running.")

    # -- the story ----------------------------------------------------------------------

    def run(self, a: Site, b: Site, retired: RetiredServer) -> None:
        self.title("Two sites, each with its own SQLite database")
        migrations = [site.migrate() for site in (a, b)]
        for site, process in zip((a, b), migrations, strict=True):
            output, _ = process.communicate(timeout=120)
            if process.returncode:
                raise CommandError(f"migrate failed for site {site.name}:\n{output.decode()}")
        a.start()
        b.start()
        self.say(f"site A  {a.url}\nsite B  {b.url}\n"
                 f"(a retired server at {retired.url} still serves documents; "
                 "its inbox answers 410 Gone)")

        self.title("1. Linking across sites")
        bob = b.post("/demo/members/", name="bob")["urlid"]
        alice = a.post("/demo/members/", name="alice")["urlid"]
        climbers = a.post("/demo/circles/", name="Climbers", owner=bob)
        self.say(f"B: member bob is {bob}")
        self.say(f"A: circle Climbers ({climbers['urlid']}) is owned by bob, who lives on B")
        a.post(f"/demo/circles/{climbers['pk']}/", add=[alice, bob])
        self.say("A: alice (local) and bob (remote) join Climbers")
        # Both activities: the Add alone gives B the circle, and the Create may still be
        # on its way (a retry on a busy machine).
        self.wait("B to know Climbers, its owner and its member", lambda: _circle_on(
            b, climbers["urlid"], owner=bob, members=[bob])
            and {"Create", "Add"} <= {entry["type"] for entry in b.state()["log"]})
        for entry in b.state()["log"]:
            self.say(f"   B received {entry['type']:<6} {entry['object']}"
                     + (f" → {entry['target']}" if entry["target"] else ""))
        self.say("   (A found B's inbox in bob's document and cached it)")

        self.title("2. Site B goes down; A keeps working")
        b.stop()
        self.say("B stopped.")
        a.post(f"/demo/circles/{climbers['pk']}/", owner=alice)
        a.post(f"/demo/circles/{climbers['pk']}/", owner=bob)
        self.say("A: Climbers' owner changes to alice, then back to bob (two Updates for B)")
        popup = a.post("/demo/circles/", name="Pop-up", owner=bob)
        a.post(f"/demo/circles/{popup['pk']}/delete/")
        self.say("A: circle Pop-up is created for bob and deleted again (a Create and a Delete)")
        self.say(f"   (the demo retries fast: backoff {DEMO_ENV['AQ_BACKOFF']} s doubling up to "
                 f"{DEMO_ENV['AQ_BACKOFF_MAX']} s, a {DEMO_ENV['AQ_CIRCUIT_COOLDOWN']} s pause "
                 "after 5 failures in a row; a real site waits 30 s doubling up to 6 h, and "
                 "60 s)")
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            time.sleep(1)
            state = a.state()
            for row in state["queue"]:
                wait = row["due_in"] if row["due_in"] > 0 else 0.0
                error = row["error"].split(" ssl:")[0] or "not tried yet"
                self.say(f"   A's queue: {row['type']:<6} to B, {row['attempts']} failed "
                         f"attempt(s), next in {wait:.1f} s of short demo backoff ({error})")
            for host in state["hosts"]:
                self.say(f"   A's circuit breaker for B: {host['failures']} consecutive "
                         f"failures, circuit {host['circuit']}")

        self.title("3. Site B comes back; A catches up")
        b.start()
        self.say("B started again (same database).")
        self.wait("A's queue to drain", lambda: not a.state()["queue"])
        self.wait("B to have the final state", lambda: _circle_on(
            b, climbers["urlid"], owner=bob, members=[bob]))
        known = {c["urlid"] for c in b.state()["circles"]}
        self.say(f"B: Climbers is owned by bob again; B never heard of Pop-up: "
                 f"{popup['urlid'] not in known}")

        self.title("4. A member on a retired server")
        carol = retired.url + "/users/3/"
        a.post(f"/demo/circles/{climbers['pk']}/", add=[carol])
        self.say(f"A: carol ({carol}) joins Climbers; her server's inbox answers 410 Gone")
        self.wait("the Add to carol's server to fail", lambda: any(
            e["status"] == "failed" for e in a.state()["log"]))
        failed = [e for e in a.state()["log"] if e["status"] == "failed"]
        for e in failed:
            error = e["error"] if e["error"].startswith(f"HTTP {e['code']}") else (
                f"HTTP {e['code']}: {e['error']}" if e["code"] else e["error"])
            self.say(f"   A's log: {e['type']} to {e['inbox']} failed: {error} (not retried)")

        self.summary(a.state(), b.state())
        self.say(f"\n({_python()} manage.py demo --keep keeps both databases, to look at the "
                 "queue and the log in the admin)")

    def summary(self, a: dict, b: dict) -> None:
        self.title("Summary (from each site's Activity log)")
        out = [e for e in a["log"] if e["direction"] == "out"]
        counts = Counter(e["status"] for e in out)
        retries = sum(max(e["attempts"] - 1, 0) for e in out if e["status"] == "sent")
        self.say(f"site A sent      {counts['sent']:>3}  "
                 f"({', '.join(f'{n} {t}' for t, n in _types(out, 'sent'))})")
        self.say(f"site A retried   {retries:>3}  attempts before those deliveries succeeded")
        self.say(f"site A dropped   {counts['dropped']:>3}  as redundant:")
        for e in (e for e in out if e["status"] == "dropped"):
            self.say(f"                      {e['type']:<6} {e['object']}: {e['error']}")
        self.say(f"site A failed    {counts['failed']:>3}  "
                 f"({', '.join(e['error'] for e in out if e['status'] == 'failed')})")
        received = [e for e in b["log"] if e["direction"] == "in"]
        self.say(f"site B received  {len(received):>3}  "
                 f"({', '.join(f'{n} {t}' for t, n in _types(received, 'received'))})")
        if not counts["sent"] or not retries or not counts["dropped"] or not counts["failed"]:
            raise CommandError("the demonstration did not show everything it should")

    # -- output and waiting ---------------------------------------------------------------

    def title(self, text: str) -> None:
        self.stdout.write("\n" + self.style.MIGRATE_HEADING(text))

    def say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def wait(self, what: str, done: Callable[[], bool], timeout: float = 20) -> None:
        self.say(f"   … waiting for {what}")
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise CommandError(f"gave up waiting for {what}")
            time.sleep(0.1)


def _python() -> str:
    """How to run this Python from the repository root, as the hints say it: the virtual
    environment's (``.venv/bin/python``), where a bare ``python`` may not have Django."""
    here = Path(sys.executable)
    try:
        return str(here.relative_to(ROOT))
    except ValueError:
        venv = ROOT / ".venv" / "bin" / "python"
        return ".venv/bin/python" if venv.exists() else str(here)


def _circle_on(site: Site, urlid: str, *, owner: str, members: list[str]) -> bool:
    for circle in site.state()["circles"]:
        if circle["urlid"] == urlid:
            return circle["owner"] == owner and sorted(circle["members"]) == sorted(members)
    return False


def _types(entries: list[dict], status: str) -> list[tuple[str, int]]:
    return sorted(Counter(e["type"] for e in entries if e["status"] == status).items())

