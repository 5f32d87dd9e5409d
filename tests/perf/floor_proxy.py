"""``python -m tests.perf.floor_proxy PORT UPSTREAM_URL``: the floor under the gateway.

The least an aiohttp proxy can do on the same stack (uvloop, one web.Application, one
ClientSession, keep-alive upstream, the gateway's malloc settings): take the body, POST it
unchanged to ``UPSTREAM_URL``, answer with the upstream's bytes (a stream relayed chunk by
chunk). No translation, no middleware, no checks. ``compare.py`` sends it the upstream's own
request bytes, so what it adds over "direct" is what the two HTTP hops through aiohttp cost;
the gateway's own work is what it adds over this.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import aiohttp
import uvloop
from aiohttp import web
from yarl import URL

from gateway.app import tune_malloc

HEADERS = {
    "Content-Type": "application/json",
    "Authorization": "Bearer sk-bench",
    "User-Agent": "floor-proxy",
    "Accept": "*/*",
    "Accept-Encoding": "gzip, deflate",
}


async def main(port: int, upstream: str) -> None:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    url = URL(upstream)

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with session.post(url, data=body, headers=HEADERS) as up:
            if not up.headers.get("Content-Type", "").startswith("text/event-stream"):
                return web.Response(body=await up.read(), content_type="application/json")
            out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/messages", proxy)
    app.router.add_get("/healthz", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await session.close()
        await runner.cleanup()


if __name__ == "__main__":
    tune_malloc()  # the gateway's allocator settings: the floor must not pay what it does not
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
