"""The receivers the benchmark sends to: nginx on loopback ports, and a black hole.

nginx (Debian's package) answers ``POST /inbox/`` with 202 from one worker
process: C, keep-alive, no logging, so the clients are measured, not the
receiver. Its CPU time is read from /proc around each phase to show how far it
is from being the bottleneck. The black hole accepts connections and never
answers, like a server that died with its socket open.
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

NGINX_CONF = """\
worker_processes 1;
daemon on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    client_max_body_size 1m;
    client_body_buffer_size 64k;
    server {{
{listens}
        # `return` discards the request body (it is read and dropped), and the
        # connection stays open for the next request.
        location /inbox/ {{ default_type application/json; return 202 '{{}}'; }}
        location / {{ return 404; }}
    }}
}}
"""


def free_ports(count: int) -> list[int]:
    """Ports that were free a moment ago (the kernel picks them)."""
    held, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)
        ports.append(s.getsockname()[1])
    for s in held:
        s.close()
    return ports


def ensure_nginx() -> str | None:
    """The nginx binary, installing Debian's nginx-light (or nginx) when it is missing."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    print("bench: installing nginx from Debian's packages (apt-get)…", flush=True)
    subprocess.run(["apt-get", *lock, "update", "-qq"], env=env, check=False,
                   stdout=subprocess.DEVNULL)
    for package in ("nginx-light", "nginx"):
        done = subprocess.run(["apt-get", *lock, "install", "-y", "-qq", package], env=env,
                              check=False, stdout=subprocess.DEVNULL)
        if done.returncode == 0:
            break
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                     else None)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(stat[1]) == pid:
                    out.append(int(entry.name))
        return out


class Nginx:
    """nginx with a generated configuration, listening on ``ports`` of 127.0.0.1."""

    kind = "nginx"

    def __init__(self, binary: str, ports: list[int]) -> None:
        self.binary = binary
        self.ports = ports
        self.dir = Path(tempfile.mkdtemp(prefix="aq-bench-nginx-"))
        self.master: int | None = None
        self.worker_pids: list[int] = []

    def start(self) -> Nginx:
        listens = "\n".join(f"        listen 127.0.0.1:{p} backlog=4096;" for p in self.ports)
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, listens=listens))
        subprocess.run([self.binary, "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                        "-c", str(conf)], check=True)
        deadline = time.monotonic() + 10
        pidfile = self.dir / "nginx.pid"
        while time.monotonic() < deadline:
            if pidfile.exists() and pidfile.read_text().strip():
                self.master = int(pidfile.read_text())
                self.worker_pids = _children(self.master)
                if self.worker_pids and all(_answers(p) for p in self.ports):
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not start; see {self.dir / 'error.log'}")

    def version(self) -> str:
        out = subprocess.run([self.binary, "-v"], capture_output=True, text=True, check=False)
        return (out.stderr or out.stdout).strip().split("/")[-1]

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.worker_pids)

    def stop(self) -> None:
        if self.master:
            subprocess.run([self.binary, "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                            "-c", str(self.dir / "nginx.conf"), "-s", "stop"], check=False)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{self.master}").exists():
                time.sleep(0.05)
            self.master = None
        shutil.rmtree(self.dir, ignore_errors=True)


class FallbackReceiver:
    """aiohttp.web in a subprocess, used only when nginx cannot be installed.

    Slower than nginx: the report flags it and shows its CPU use, so a reader
    can see whether it, rather than the client, set the pace.
    """

    kind = "aiohttp-fallback"

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.proc: subprocess.Popen | None = None
        self.worker_pids: list[int] = []

    def start(self) -> FallbackReceiver:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.latency_receiver", "--fast",
             *map(str, self.ports)],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent,
        )
        self.proc.stdout.readline()
        self.worker_pids = [self.proc.pid]
        return self

    def version(self) -> str:
        import aiohttp

        return f"aiohttp {aiohttp.__version__}"

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class BlackHole:
    """Accepts TCP connections on ``ports`` and never sends a byte back."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self._selector = selectors.DefaultSelector()
        self._listeners: list[socket.socket] = []
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="black-hole", daemon=True)

    def start(self) -> BlackHole:
        for port in self.ports:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen(1024)
            s.setblocking(False)
            self._selector.register(s, selectors.EVENT_READ)
            self._listeners.append(s)
        self._thread.start()
        return self

    @property
    def accepted(self) -> int:
        return len(self._held)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                try:
                    conn, _ = key.fileobj.accept()
                except OSError:
                    continue
                self._held.append(conn)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(5)
        for s in self._held + self._listeners:
            s.close()
        self._selector.close()
