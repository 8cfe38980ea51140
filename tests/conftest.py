import pytest

from activity_queue.conf import get_config
from activity_queue.sending.worker import Worker

from .support.key_server import DocumentServer
from .support.peer import FullBacklog, Peer, keep_alive
from .support.receiver import Receiver


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def peer():
    """Start raw-socket peers whose bytes a test scripts (see tests/support/peer.py); all are
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
def sentry():
    """sentry-sdk initialised as a site would, with a capturing transport; reset afterwards."""
    from .support.sentry import start_capturing, stop_capturing

    yield start_capturing()
    stop_capturing()


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


@pytest.fixture
def spawn(transactional_db, tmp_path):
    """Start subprocesses (``django-admin`` commands by default) on the test database.

    All of them are killed after the test.
    """
    from .support.processes import Proc, environment

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


@pytest.fixture
def keys():
    """A loopback server of actor and key documents (``keys.documents[path] = (status,
    document)``)."""
    server = DocumentServer().start()
    yield server
    server.stop()


@pytest.fixture
def applied(monkeypatch):
    """What the inbox hands to ``receive.apply_activity``, recorded instead of applied."""
    from activity_queue.inbox import receive

    calls = []
    monkeypatch.setattr(receive, "apply_activity", calls.append)
    return calls


@pytest.fixture
def clean_cache():
    """An empty default cache before and after the test (fetched keys live there)."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
