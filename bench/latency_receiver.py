"""A small aiohttp receiver that timestamps arrivals (nginx cannot tell us when).

``python -m bench.latency_receiver PORT``: records ``(activity id, time.time())``
per POST and serves them at ``GET /records``. With ``--fast`` it only answers
202 (the fallback receiver when nginx cannot be installed).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiohttp import web


def make_app(record: bool) -> web.Application:
    arrivals: list[tuple[str, float]] = []

    async def inbox(request: web.Request) -> web.Response:
        data = await request.read()
        if record:
            arrivals.append((json.loads(data).get("id", ""), time.time()))
        return web.Response(status=202, body=b"{}", content_type="application/json")

    async def records(request: web.Request) -> web.Response:
        return web.json_response(arrivals)

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/inbox/{tail:.*}", inbox)
    app.router.add_get("/records", records)
    return app


async def serve(ports: list[int], record: bool) -> None:
    runner = web.AppRunner(make_app(record), access_log=None)
    await runner.setup()
    for port in ports:
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str]) -> None:
    fast = "--fast" in argv
    ports = [int(a) for a in argv if a.isdigit()]
    try:
        asyncio.run(serve(ports, record=not fast))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
