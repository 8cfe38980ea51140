"""Real subprocesses (``activity_worker``, ``runserver``, a WSGI server) on the test database.

Each runs ``python -m django <command>`` (or a script) with ``tests.proc_settings``, in its
own session, so that a kill reaches its children too (the autoreloader's).
Output goes to files, not pipes, so a chatty process never blocks on a full pipe.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path, name: str,
                 program: str | None = None) -> None:
        """Run ``python -m django *args``, or ``python program *args``."""
        self.args = args
        self.out_path = log_dir / f"{name}.out"
        self.err_path = log_dir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, *([program] if program else ["-m", "django"]), *args],
                cwd=ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole session (the process and anything it started)."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(10)

    def __repr__(self) -> str:
        return f"<Proc {self.args} pid={self.pid} rc={self.popen.returncode}>"


def environment(queue: dict | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RUN_MAIN", None)
    env.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "AQ_PROC_DB_NAME": str(connection.settings_dict["NAME"]),
        "AQ_PROC_QUEUE": json.dumps(queue or {}),
        "DJANGO_SETTINGS_MODULE": "tests.proc_settings",
        **extra,
    })
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
