"""A dedicated worker on PostgreSQL is woken by NOTIFY at commit, not by polling."""

import threading

import pytest
from django.db import connection, transaction
from django.test import override_settings

from activity_queue import enqueue
from activity_queue.conf import get_config
from activity_queue.sending.worker import Worker

from ..support.helpers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def slow_polling():
    with override_settings(ACTIVITY_QUEUE={"ALLOW_PRIVATE_ADDRESSES": True,
                                           "POLL_INTERVAL": 120.0}):
        get_config.cache_clear()
        yield
    get_config.cache_clear()


def _listening() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity "
                       "WHERE query = 'LISTEN activity_queue' AND state = 'idle'")
        return cursor.fetchone()[0] > 0


def test_commit_wakes_a_listening_worker(receiver, slow_polling):
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite workers poll")
    worker = Worker()
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        # Once it listens, the worker's only other wake-up is POLL_INTERVAL (120 s) away.
        assert wait_until(_listening, timeout=10)
        with transaction.atomic():
            enqueue({"type": "Create", "object": "https://x.example/1"},
                    to=receiver.url("/inbox/"))
        assert receiver.wait_for(lambda r: len(r.received) == 1, timeout=15)
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()


def test_rolled_back_enqueue_does_not_notify(slow_polling):
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    import psycopg

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute("LISTEN activity_queue")
        with pytest.raises(RuntimeError), transaction.atomic():
            enqueue({"type": "Create", "object": "https://x.example/1"},
                    to="https://remote.example/inbox/")
            raise RuntimeError("roll back")
        assert list(listener.notifies(timeout=0.5, stop_after=1)) == []
        with transaction.atomic():
            enqueue({"type": "Create", "object": "https://x.example/1"},
                    to="https://remote.example/inbox/")
        assert len(list(listener.notifies(timeout=5, stop_after=1))) == 1
