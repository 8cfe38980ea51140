"""The peer: Celery on Redis, one plain task per delivery, as a site would write it.

No queue of ours, no database: ``deliver.delay(inbox, activity)`` per
activity, and a task that does ``requests.post`` (SPEC §8 "well-known peers").
``python -m bench.celery_peer '<json task>'`` starts a Celery worker
(``celery -A bench.celery_peer worker``, threads or prefork pool) on a queue of
its own, warms it up, publishes the backlog to a second queue the worker does
not consume yet (not timed), then tells the worker to consume it and times
from there to the last task done. Each task counts itself in Redis (one
``INCR``), the only addition to the naive task. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import requests
from celery import Celery

from .payload import CONTENT_TYPE, activity
from .receivers import _children, cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("AQ_BENCH_REDIS", "redis://127.0.0.1:6379/7")
RUN = os.environ.get("AQ_BENCH_CELERY_RUN", "aq-bench")
HEADERS = {"Content-Type": CONTENT_TYPE}

app = Celery("aq_bench", broker=REDIS_URL)
app.conf.update(task_default_queue=f"{RUN}-warm", broker_connection_retry_on_startup=True,
                task_ignore_result=True, worker_hijack_root_logger=False)
_counter: redis.Redis | None = None


@app.task(name="bench.deliver")
def deliver(inbox: str, payload: dict) -> None:
    """The naive delivery task: one POST, an error if the inbox did not accept it."""
    response = requests.post(inbox, data=json.dumps(payload), headers=HEADERS, timeout=10)
    response.raise_for_status()
    _count()


def _count() -> None:
    global _counter
    if _counter is None:
        _counter = redis.Redis.from_url(REDIS_URL)
    _counter.incr(f"{RUN}:done")


def _wait_for(client: redis.Redis, key: str, n: int, timeout: float,
              worker: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + timeout
    while int(client.get(key) or 0) < n:
        if worker.poll() is not None:
            raise RuntimeError(f"the Celery worker exited with {worker.returncode}: "
                               f"{_tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{client.get(key)} of {n} tasks done after {timeout:.0f} s: "
                               f"{_tail(log)}")
        time.sleep(0.005)


def _tail(log) -> str:
    log.seek(0)
    return log.read()[-2000:]


def _worker_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in [pid, *_children(pid)])


def measure(task: dict) -> dict:
    n, urls, pids = task["n"], task["urls"], task.get("receiver_pids", [])
    brokers = [task["broker_pid"]] if task.get("broker_pid") else []
    pool, concurrency = task.get("pool", "threads"), task.get("concurrency", 16)
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    warm_queue, queue, done = f"{RUN}-warm", f"{RUN}-backlog", f"{RUN}:done"
    client.delete(warm_queue, queue, done)
    node = f"{RUN}@bench"
    env = {**os.environ, "AQ_BENCH_CELERY_RUN": RUN, "AQ_BENCH_REDIS": REDIS_URL,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty worker never blocks
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.celery_peer", "worker", f"--pool={pool}",
         f"--concurrency={concurrency}", "--loglevel=warning", "--without-gossip",
         "--without-mingle", "--without-heartbeat", "-Q", warm_queue, "-n", node],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        warm = 4 * concurrency
        for i in range(warm):
            deliver.apply_async((urls[i % len(urls)], activity(i, f"{RUN}-warm")))
        _wait_for(client, done, warm, 60, worker, log)
        publish0 = time.perf_counter()
        for i in range(n):
            deliver.apply_async((urls[i % len(urls)], activity(i, RUN)), queue=queue)
        published = time.perf_counter() - publish0
        client.set(done, 0)
        receiver0, cpu0 = sum(cpu_seconds(p) for p in pids), _worker_cpu(worker.pid)
        broker0 = sum(cpu_seconds(p) for p in brokers)
        t0 = time.perf_counter()
        replies = app.control.add_consumer(queue, destination=[node], reply=True, timeout=10)
        if not replies:
            raise RuntimeError("the Celery worker did not answer add_consumer")
        _wait_for(client, done, n, max(120.0, n / 20), worker, log)
        seconds = time.perf_counter() - t0
        cpu = _worker_cpu(worker.pid) - cpu0
        receiver = sum(cpu_seconds(p) for p in pids) - receiver0
        broker = sum(cpu_seconds(p) for p in brokers) - broker0
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
        client.delete(warm_queue, queue, done)
    import celery

    return {"n": n, "seconds": seconds, "per_second": n / seconds, "pool": pool,
            "concurrency": concurrency, "cpu_ms_per_post": cpu * 1000 / n,
            "cpu_share": cpu / seconds,
            "receiver_cpu_share": receiver / seconds if pids else None,
            "broker_cpu_share": broker / seconds if brokers else None,
            "publish_us_per_task": published * 1e6 / n, "celery": celery.__version__}


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
