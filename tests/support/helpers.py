"""Plain functions the tests import (fixtures live in tests/conftest.py)."""

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import transaction

from activity_queue import enqueue
from activity_queue.models import Activity, Payload
from activity_queue.sending.worker import Worker


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll ``predicate`` until it is truthy or the deadline passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def stored(document: dict, object_id: str = "") -> Payload:
    """``document`` saved as a payload, as ``enqueue()`` would store it."""
    payload = Payload.of(document, activity_type=document["type"], object_id=object_id)
    payload.save()
    return payload


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


_notes = itertools.count()


def send(inbox: str, *, rollback: bool = False) -> str:
    """Enqueue one activity to ``inbox`` in its own transaction; returns its id."""

    class Rollback(Exception):
        pass

    activity = {"type": "Create", "object": f"https://origin.example/notes/{next(_notes)}"}
    try:
        with transaction.atomic():
            row = enqueue(activity, to=inbox)[0]
            if rollback:
                raise Rollback
    except Rollback:
        pass
    return row.activity_id


def sent(activity_id: str) -> Activity | None:
    """The log row of ``activity_id`` once it was delivered."""
    return Activity.objects.filter(activity_id=activity_id, status="sent").first()
