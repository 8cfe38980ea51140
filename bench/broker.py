"""The Redis broker of the Celery peer: a private ``redis-server`` for the sitting.

Started on a free loopback port with no persistence and stopped at the end,
so that the benchmark neither depends on nor disturbs a Redis already
running. ``AQ_BENCH_REDIS`` (a ``redis://`` URL) uses an existing server
instead. Debian's ``redis-server`` is installed when missing and the script
runs as root, as nginx is.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def ensure_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    print("bench: installing redis-server from Debian's packages (apt-get)…", flush=True)
    subprocess.run(["apt-get", *lock, "update", "-qq"], env=env, check=False,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", *lock, "install", "-y", "-qq", "redis-server"], env=env,
                   check=False, stdout=subprocess.DEVNULL)
    return shutil.which("redis-server")


class RedisServer:
    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="aq-bench-redis-"))
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--logfile",
             str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start; see {self.dir / 'redis.log'}")

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                             check=False)
        return next((w.split("=")[1] for w in out.stdout.split() if w.startswith("v=")), "?")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
