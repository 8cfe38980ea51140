"""The raw clients, with no queue and no database: the ceilings we compare against.

Run as a child process (``python -m bench.ceilings '<json task>'``) so that its
CPU time is its own. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from itertools import count

import aiohttp
import requests

from .payload import CONTENT_TYPE, body
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


def main(task: dict) -> dict:
    if task["client"] == "aiohttp":
        return aiohttp_ceiling(task["urls"], task["n"], task["inflight"], task["receiver_pids"])
    return requests_loop(task["urls"], task["n"], task["receiver_pids"])


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
