"""The raw clients, with no queue and no database: the ceilings we compare against.

Run as a child process (``python -m bench.ceilings '<json task>'``) so that its
CPU time is its own. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import count

import aiohttp
import requests

from .payload import BENCH_KEY_ID, CONTENT_TYPE, bench_key_pem, body
from .receivers import cpu_seconds

HEADERS = {"Content-Type": CONTENT_TYPE}


def _measure(run, n: int, receiver_pids: list[int]) -> dict:
    receiver0 = sum(cpu_seconds(p) for p in receiver_pids)
    cpu0, t0 = time.process_time(), time.perf_counter()
    run()
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    receiver = sum(cpu_seconds(p) for p in receiver_pids) - receiver0
    return {
        "n": n, "seconds": seconds, "per_second": n / seconds,
        "cpu_ms_per_post": cpu * 1000 / n, "cpu_share": cpu / seconds,
        "receiver_cpu_share": receiver / seconds if receiver_pids else None,
    }


def aiohttp_ceiling(urls: list[str], n: int, inflight: int,
                    receiver_pids: list[int]) -> dict:
    """``inflight`` coroutines sharing one ClientSession post ``n`` bodies between them."""
    data = body()

    async def main() -> dict:
        async with aiohttp.ClientSession(headers=HEADERS,
                                         connector=aiohttp.TCPConnector(limit=0)) as session:
            async def worker(numbers) -> None:
                for i in numbers:
                    async with session.post(urls[i % len(urls)], data=data) as resp:
                        await resp.read()
                        if resp.status != 202:
                            raise RuntimeError(f"receiver answered {resp.status}")

            warm = iter(range(inflight * 4))
            await asyncio.gather(*(worker(warm) for _ in range(inflight)))
            numbers = iter(range(n))
            loop = asyncio.get_running_loop()
            receiver0 = sum(cpu_seconds(p) for p in receiver_pids)
            cpu0, t0 = time.process_time(), loop.time()
            await asyncio.gather(*(worker(numbers) for _ in range(inflight)))
            seconds = loop.time() - t0
            cpu = time.process_time() - cpu0
            receiver = sum(cpu_seconds(p) for p in receiver_pids) - receiver0
            return {"n": n, "seconds": seconds, "per_second": n / seconds,
                    "cpu_ms_per_post": cpu * 1000 / n, "cpu_share": cpu / seconds,
                    "receiver_cpu_share": receiver / seconds if receiver_pids else None,
                    "inflight": inflight}

    return asyncio.run(main())


def requests_loop(urls: list[str], n: int, receiver_pids: list[int]) -> dict:
    """One thread, one ``requests.Session``, one POST after the other."""
    data = body()
    session = requests.Session()
    for i in range(len(urls) * 2):
        session.post(urls[i % len(urls)], data=data, headers=HEADERS).raise_for_status()
    numbers = count()

    def run() -> None:
        for _ in range(n):
            i = next(numbers)
            resp = session.post(urls[i % len(urls)], data=data, headers=HEADERS)
            if resp.status_code != 202:
                raise RuntimeError(f"receiver answered {resp.status_code}")

    return _measure(run, n, receiver_pids)


def _signed_posts(urls: list[str], n: int, inflight: int, threads: int, ready, go,
                  out) -> None:
    """One process's share of :func:`signed_ceiling`: warm up, wait for ``go``, post ``n``
    signed bodies, put (start, end, CPU seconds) on ``out``."""
    from activity_queue.net.signatures import load_private_key
    from activity_queue.net.signing import Signer

    signer = Signer(load_private_key(bench_key_pem()), BENCH_KEY_ID)
    data = body()
    pool = ThreadPoolExecutor(threads) if threads else None

    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def worker(numbers) -> None:
                for i in numbers:
                    url = urls[i % len(urls)]
                    if pool is None:
                        headers = signer("POST", url, HEADERS, data)
                    else:
                        headers = await loop.run_in_executor(pool, signer, "POST", url,
                                                             HEADERS, data)
                    async with session.post(url, data=data, headers=headers) as resp:
                        await resp.read()
                        if resp.status != 202:
                            raise RuntimeError(f"receiver answered {resp.status}")

            warm = iter(range(inflight * 4))
            await asyncio.gather(*(worker(warm) for _ in range(inflight)))
            ready.wait()
            go.wait()
            numbers = iter(range(n))
            cpu0, t0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(worker(numbers) for _ in range(inflight)))
            out.put((t0, time.perf_counter(), time.process_time() - cpu0))

    asyncio.run(run())


def signed_ceiling(urls: list[str], n: int, inflight: int, processes: int, threads: int,
                   receiver_pids: list[int]) -> dict:
    """Signed POSTs with no queue and no database: what a client signing every request
    with the same :class:`~activity_queue.net.signing.Signer` as our worker can reach.

    ``processes`` clients post ``n`` bodies between them, each with ``inflight``
    coroutines on one ClientSession; each signs in ``threads`` threads beside its event
    loop (as our worker does), or on its loop with ``threads`` 0. Several processes do not
    share a GIL."""
    context = multiprocessing.get_context("fork")
    ready, go, out = context.Barrier(processes + 1), context.Event(), context.Queue()
    children = [context.Process(target=_signed_posts, daemon=True, args=(
        urls, n // processes, inflight // processes, threads, ready, go, out))
        for _ in range(processes)]
    for c in children:
        c.start()
    ready.wait(timeout=120)
    receiver0 = sum(cpu_seconds(p) for p in receiver_pids)
    go.set()
    parts = [out.get(timeout=600) for _ in children]
    receiver = sum(cpu_seconds(p) for p in receiver_pids) - receiver0
    for c in children:
        c.join()
    seconds = max(end for _, end, _ in parts) - min(start for start, _, _ in parts)
    cpu = sum(part[2] for part in parts)
    done = n // processes * processes
    return {"n": done, "seconds": seconds, "per_second": done / seconds,
            "cpu_ms_per_post": cpu * 1000 / done, "cpu_share": cpu / seconds,
            "receiver_cpu_share": receiver / seconds if receiver_pids else None,
            "inflight": inflight, "processes": processes, "threads": threads}


def main(task: dict) -> dict:
    if task["client"] == "aiohttp":
        return aiohttp_ceiling(task["urls"], task["n"], task["inflight"], task["receiver_pids"])
    if task["client"] == "aiohttp-signed":
        return signed_ceiling(task["urls"], task["n"], task["inflight"], task["processes"],
                              task["threads"], task["receiver_pids"])
    return requests_loop(task["urls"], task["n"], task["receiver_pids"])


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
