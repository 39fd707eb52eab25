"""The fake provider of the benchmark in its own process: `python -m bench.upstream`.

It serves `sidecar.testing.fake_upstream.FakeUpstream` on a free port of
127.0.0.1, prints `ready PORT` on stdout once it listens, and serves until
it is terminated. The fake records every request; this process drops the
records every half second so a long run does not grow its memory.

A request header `X-Bench-Chunk-Delay: SECONDS` sets the pause between the
events of a streamed reply, as a model's token rate would. Without it the
whole reply is written at once. Phases of the benchmark run one after
another, so one setting for the whole fake is enough.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from sidecar.testing.fake_upstream import FakeUpstream

_CLEAR_INTERVAL = 0.5
CHUNK_DELAY_HEADER = "X-Bench-Chunk-Delay"


async def serve() -> None:
    fake = FakeUpstream()
    app = fake.app()
    app.middlewares.append(_pace(fake))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"ready {port}", flush=True)
    while True:
        await asyncio.sleep(_CLEAR_INTERVAL)
        fake.requests.clear()


def _pace(fake: FakeUpstream) -> Middleware:
    @web.middleware
    async def pace(request: web.Request, handler: Handler) -> web.StreamResponse:
        fake.chunk_delay = float(request.headers.get(CHUNK_DELAY_HEADER, "0"))
        return await handler(request)

    return pace


if __name__ == "__main__":
    asyncio.run(serve())
