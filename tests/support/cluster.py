"""A PostgreSQL server of a test's own, to restart and crash without touching the shared one.

``initdb`` and ``pg_ctl`` run as the ``postgres`` user (``runuser``) on a free loopback
port, with the data directory in a temporary directory removed afterwards. The bench's
fault scenarios (``bench/faults.py``) use it too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(os.environ.get("AQ_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER = "postgres"
DB_NAME = "aq_faults"


def available() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    if not (BIN / "pg_ctl").exists():
        return f"no pg_ctl in {BIN} (set AQ_PG_BIN)"
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return "starting a PostgreSQL server of its own needs root and runuser"
    return None


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """One throwaway server: :meth:`start`, :meth:`restart`, :meth:`crash`, :meth:`remove`."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="aq-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        shutil.chown(self.root, USER, USER)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "--no-sync",
                  "-E", "UTF8", "--locale=C.UTF-8")
        options = [f"port = {self.port}", "listen_addresses = '127.0.0.1'",
                   "unix_socket_directories = ''", "fsync = off", "full_page_writes = off",
                   "max_connections = 50", "shared_buffers = 32MB"]
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n".join(options) + "\n")

    def _run(self, program: str, *args: str, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", USER, "--", str(BIN / program), *args],
                              capture_output=True, text=True, check=check, timeout=timeout)

    @property
    def dsn(self) -> dict:
        return {"host": "127.0.0.1", "port": self.port, "user": USER}

    def start(self) -> float:
        """Start and wait until it accepts connections; returns ``time.monotonic()`` then."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "start")
        return time.monotonic()

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends sessions and shuts down cleanly; ``immediate`` is a crash: no
        checkpoint, recovery from the WAL at the next start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, down: float = 0.0) -> float:
        """A clean stop, ``down`` seconds without a server, and a start."""
        self.stop("fast")
        time.sleep(down)
        return self.start()

    def crash(self, how: str = "immediate", down: float = 0.0) -> float:
        """``immediate`` (``pg_ctl stop -m immediate``) or ``kill`` (SIGKILL of the
        postmaster, its backends killed after it), then ``down`` seconds and a start."""
        if how == "kill":
            self.kill_postmaster()
        else:
            self.stop("immediate")
        time.sleep(down)
        return self.start()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill_postmaster(self) -> None:
        pid = self.postmaster_pid()
        if pid is None:
            return
        children = _children(pid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        # Backends notice their postmaster's death and exit; a restart must wait for them,
        # or it finds the old shared memory still attached.
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        for child in children:
            if _alive(child):
                os.kill(child, signal.SIGKILL)
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def create_database(self, name: str = DB_NAME) -> None:
        import psycopg

        with psycopg.connect(dbname="postgres", autocommit=True, **self.dsn) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')

    def remove(self) -> None:
        self.stop("immediate")
        if self.postmaster_pid() and _alive(self.postmaster_pid()):
            self.kill_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().split(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


@contextmanager
def started_cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        cluster.start()
        cluster.create_database()
        yield cluster
    finally:
        cluster.remove()


@contextmanager
def default_database_on(cluster: Cluster, name: str = DB_NAME) -> Iterator[None]:
    """Point this process's ``default`` database at ``cluster`` for the block.

    Django's connections share one settings dict per alias, so threads that connect
    later (a worker's writer and listener) follow too.
    """
    from django.db import connections

    settings_dict = connections["default"].settings_dict
    saved = dict(settings_dict)
    connections["default"].close()
    settings_dict.update({"HOST": "127.0.0.1", "PORT": str(cluster.port), "NAME": name,
                          "USER": USER, "PASSWORD": ""})
    try:
        yield
    finally:
        connections["default"].close()
        settings_dict.clear()
        settings_dict.update(saved)
