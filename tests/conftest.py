import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from activity_queue.conf import get_config
from activity_queue.sending.worker import Worker

from .peer import FullBacklog, Peer, keep_alive
from .receiver import Receiver


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def peer():
    """Start raw-socket peers whose bytes a test scripts (see tests/peer.py); all are
    stopped after the test. ``peer(script, host=..., tls=...)``."""
    started: list[Peer] = []

    def start(script=keep_alive, **kwargs) -> Peer:
        server = Peer(script, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def full_backlog():
    """A loopback port whose connects hang until the client gives up (see FullBacklog)."""
    server = FullBacklog()
    yield server
    server.close()


@pytest.fixture
def ca():
    """A certificate authority of the test's own, and a TLS server context for
    "localhost" and 127.0.0.1 signed by it (``ca.server``)."""
    import ssl

    import trustme

    authority = trustme.CA()
    authority.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("localhost", "127.0.0.1").configure_cert(authority.server)
    return authority


@pytest.fixture
def worker():
    """A worker whose transport is stopped after the test."""
    get_config.cache_clear()
    made = []

    def make(**kwargs) -> Worker:
        w = Worker(**kwargs)
        made.append(w)
        return w

    yield make
    for w in made:
        w._shutdown()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll ``predicate`` until it is truthy or the deadline passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@pytest.fixture
def spawn(transactional_db, tmp_path):
    """Start subprocesses (``django-admin`` commands by default) on the test database.

    All of them are killed after the test.
    """
    from .processes import Proc, environment

    started: list[Proc] = []

    def start(*args: str, queue: dict | None = None, env: dict | None = None,
              program: str | None = None) -> Proc:
        proc = Proc(list(args), environment(queue, **(env or {})), tmp_path, f"p{len(started)}",
                    program=program)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def aq_settings(**overrides):
    """``override_settings`` for ``ACTIVITY_QUEUE``: the test defaults plus ``overrides``.

    Use it around the creation of a worker: a worker reads its config when built.
    """
    from django.conf import settings
    from django.test import override_settings

    base = dict(getattr(settings, "ACTIVITY_QUEUE", {}))
    return override_settings(ACTIVITY_QUEUE={**base, **overrides})


@contextmanager
def running(w: Worker) -> Iterator[None]:
    """``w.run_forever()`` in a thread for the block; stopped and joined after it."""
    runner = threading.Thread(target=w.run_forever)
    runner.start()
    try:
        yield
    finally:
        w.stop()
        runner.join(30)


@contextmanager
def recorded_statements() -> Iterator[list[tuple[str, object]]]:
    """``(sql, params)`` of every statement run on the default connection in the block."""
    from django.db import connection

    seen: list[tuple[str, object]] = []

    def record(execute, sql, params, many, context):
        seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield seen


def sqlite_plan(sql: str, params) -> list[str]:
    """The lines of SQLite's ``EXPLAIN QUERY PLAN`` for a statement."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return [row[-1] for row in cursor.fetchall()]
