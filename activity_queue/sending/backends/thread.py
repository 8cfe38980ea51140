"""The in-process worker: one ``Worker`` in a daemon thread of a serving process.

Started from ``AppConfig.ready()`` for ``runserver``, and on the first request
in other servers, so that a pre-forking server (gunicorn) starts it in each
worker process after the fork, not in the parent.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

from django.db import connections

from ...conf import Config, get_config
from ..worker import Worker

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_worker: Worker | None = None
_thread: threading.Thread | None = None
_pid: int | None = None
_autostart = False
#: Why the configuration cannot run a worker, one line per reason ("" when it can). Set
#: from ``AppConfig.ready()`` to the system checks' errors: sending cannot import checks.
refusal: Callable[[], str] = str
#: The configuration last refused, so that the refusal is logged once, not per request.
_refused: Config | None = None


#: Programs that run management commands; of those, only ``runserver`` serves.
MANAGEMENT_PROGRAMS = frozenset({"manage.py", "django-admin", "django-admin.py", "django"})
#: Programs that load Django but serve no web requests.
NON_SERVING_PROGRAMS = frozenset({"celery"})


def autostart_mode(argv: Sequence[str], environ: Mapping[str, str], *,
                   testing: bool, autostart: bool = True,
                   backend: str = "thread") -> str | None:
    """Whether this process runs the in-process worker: ``"now"``, ``"on-request"`` or None.

    ``"now"`` is runserver's serving process (its autoreloading parent only
    watches files); ``"on-request"`` is any other server, which starts the
    worker at its first request so that a pre-forking server (gunicorn)
    starts one per worker process, after the fork. Test runs (``testing``)
    and other management commands never start it on their own, nor does
    any process when ``AUTOSTART`` is off or another backend (Celery) delivers.
    """
    if testing or not autostart or backend != "thread":
        return None
    program = program_name(argv)
    if program in MANAGEMENT_PROGRAMS or program.endswith("manage.py"):
        command = argv[1] if len(argv) > 1 else ""
        if command != "runserver":
            return None
        if "--noreload" in argv or environ.get("RUN_MAIN") == "true":
            return "now"
        return None
    if program in NON_SERVING_PROGRAMS:
        return None
    return "on-request"


def program_name(argv: Sequence[str]) -> str:
    """``python -m pkg`` puts ``.../pkg/__main__.py`` in ``argv[0]``: that program is ``pkg``."""
    path = argv[0] if argv else ""
    name = os.path.basename(path)
    if name == "__main__.py":
        name = os.path.basename(os.path.dirname(path))
    return name


def under_tests() -> bool:
    """A test run (pytest is loaded): the worker starts only where a test starts it."""
    return "pytest" in sys.modules


def allow_autostart() -> None:
    global _autostart
    _autostart = True


def running() -> Worker | None:
    if _worker is not None and _pid == os.getpid() and _thread and _thread.is_alive():
        return _worker
    return None


def start(**kwargs) -> Worker | None:
    """Start the in-process worker (once per process) and return it; None if the
    configuration is refused (logged once at ERROR: the worker stays down)."""
    global _worker, _thread, _pid, _refused
    with _lock:
        current = running()
        if current is not None:
            return current
        config = get_config()
        if _refused is config:
            return None
        if reasons := refusal():
            _refused = config
            logger.error("activity_queue: the in-process worker does not start, the "
                         "configuration is refused:\n%s", reasons)
            return None
        worker = Worker(**{"mode": "in-process", **kwargs})
        thread = threading.Thread(target=_serve, args=(worker,), name="activity-queue-worker",
                                  daemon=True)
        _worker, _thread, _pid = worker, thread, os.getpid()
        thread.start()
        return worker


def ensure_started(**_kwargs) -> None:
    """``request_started`` receiver: this process serves requests, so it runs the worker."""
    if running() is None:
        allow_autostart()
        start()


def _serve(worker: Worker) -> None:
    try:
        worker.run_forever()
    finally:
        for conn in connections.all(initialized_only=True):
            conn.close()


def stop(timeout: float = 5.0) -> None:
    """Stop the in-process worker, handing back what it holds."""
    global _worker, _thread
    with _lock:
        worker, thread = _worker, _thread
        _worker = _thread = None
    if worker is not None and thread is not None:
        worker.grace = min(worker.grace, timeout)
        worker.stop()
        thread.join(timeout + 10)


def wake(using: str) -> None:
    worker = running()
    if worker is not None:
        worker.wake()
    elif _autostart:
        start()


atexit.register(stop)
