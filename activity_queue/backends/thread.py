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

from django.db import connections

from ..worker import Worker

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_worker: Worker | None = None
_thread: threading.Thread | None = None
_pid: int | None = None
_autostart = False


def autostart_mode(argv: list[str]) -> str | None:
    """``"now"``, ``"on-request"`` or None: whether this process should run the worker."""
    if "pytest" in sys.modules:
        return None
    program = os.path.basename(argv[0]) if argv else ""
    if program in ("manage.py", "django-admin", "__main__.py") or program.endswith("manage.py"):
        command = argv[1] if len(argv) > 1 else ""
        if command != "runserver":
            return None
        if "--noreload" in argv or os.environ.get("RUN_MAIN") == "true":
            return "now"
        return None  # the autoreloader's watching parent: its child will start it
    if program in ("celery",):
        return None
    return "on-request"


def allow_autostart() -> None:
    global _autostart
    _autostart = True


def running() -> Worker | None:
    if _worker is not None and _pid == os.getpid() and _thread and _thread.is_alive():
        return _worker
    return None


def start(**kwargs) -> Worker:
    """Start the in-process worker (once per process) and return it."""
    global _worker, _thread, _pid
    with _lock:
        current = running()
        if current is not None:
            return current
        worker = Worker(**kwargs)
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
