"""create_app(settings): routes, middleware, one ClientSession in cleanup_ctx, typed AppKeys.

Nothing happens at import time; everything with a lifetime (the ClientSession, the in-process
mock upstream) is created in ``cleanup_ctx`` and closed there.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import msgspec
from aiohttp import web

from .count_tokens import TokenCounter
from .handlers import add_routes
from .keys import (
    COUNTER,
    IN_FLIGHT,
    LIFECYCLE,
    METRICS,
    MOCK_URL,
    ROUTER,
    SETTINGS,
    SIGNER,
    UPSTREAM,
)
from .lifecycle import Lifecycle
from .logs import log_event
from .metrics import Metrics
from .middleware import InFlight, make_middleware
from .routing import Router
from .settings import Settings, UpstreamSettings
from .translate.common import Signer
from .upstream import UpstreamClient


def state_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "messages-gateway"


def load_signing_key(env: Mapping[str, str]) -> bytes:
    """The key that signs thinking blocks: ``GATEWAY_SIGNING_KEY``, else a per-install file.

    Every process and machine serving one set of clients must share it (a thinking block
    signed by one gateway is verified by the next turn's gateway).
    """
    given = env.get("GATEWAY_SIGNING_KEY")
    if given:
        return given.encode()
    path = state_dir(env) / "signing.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
    except FileExistsError:
        return path.read_bytes().strip()  # another worker won the race
    except OSError:
        pass  # read-only home: a per-process key still works within this process
    return key


def api_keys_from(env: Mapping[str, str]) -> tuple[str, ...]:
    """Inbound gateway keys: ``GATEWAY_API_KEYS`` (comma-separated) and/or a key file."""
    keys = [k.strip() for k in env.get("GATEWAY_API_KEYS", "").split(",") if k.strip()]
    key_file = env.get("GATEWAY_API_KEYS_FILE")
    if key_file:
        for line in Path(key_file).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(line)
    return tuple(keys)


#: Seconds aiohttp gives handlers to finish after ``on_shutdown`` (``shutdown_timeout``). By then
#: ``_drain`` has ended every stream and waiting request, so this only covers writing their last
#: bytes; aiohttp waits it out at most twice, so SIGTERM ends the process within
#: ``shutdown_grace`` + ~2 × this (issue 10 item 2; systemd's TimeoutStopSec is 45 s).
SHUTDOWN_FLUSH = 2.0


async def _drain(app: web.Application) -> None:
    """Graceful shutdown (issue 5): the listening sockets are closed already; give requests in
    flight ``shutdown_grace`` seconds, then end the rest at once (``Lifecycle.end_all``)."""
    life = app[LIFECYCLE]
    in_flight = app[IN_FLIGHT]
    grace = app[SETTINGS].server.shutdown_grace
    loop = asyncio.get_running_loop()
    end = loop.time() + grace
    while in_flight.active and (left := end - loop.time()) > 0:  # noqa: ASYNC110 - shutdown poll
        await asyncio.sleep(min(0.05, left))
    ended = life.end_all()
    if ended:
        log_event("shutdown_ending_requests", count=ended)


def create_app(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    signing_key: bytes | None = None,
) -> web.Application:
    """Build the gateway application. ``env`` defaults to ``os.environ`` (keys, signing key)."""
    env = dict(os.environ if env is None else env)
    in_flight = InFlight(settings.server.max_in_flight, settings.server.max_receiving)
    life = Lifecycle()
    metrics = Metrics(in_flight=lambda: in_flight.value, open_streams=lambda: len(life.streams))
    middleware = make_middleware(
        api_keys_from(env),
        in_flight,
        metrics.observe,
        send_timeout=settings.timeouts.client_send,
    )
    app = web.Application(middlewares=[middleware], client_max_size=settings.server.max_body_bytes)
    app[SETTINGS] = settings
    app[IN_FLIGHT] = in_flight
    app[LIFECYCLE] = life
    app[METRICS] = metrics
    app.on_shutdown.append(_drain)
    app[SIGNER] = Signer(signing_key or load_signing_key(env))
    add_routes(app)

    async def mock_ctx(app: web.Application) -> AsyncIterator[None]:
        from .mock_upstream import start_mock

        runner, url = await start_mock("127.0.0.1", 0)
        app[MOCK_URL] = url
        log_event("mock_upstream_started", upstream=url, mock=True)
        try:
            yield
        finally:
            await runner.cleanup()

    async def upstream_ctx(app: web.Application) -> AsyncIterator[None]:
        effective = settings
        if settings.mock:
            mock_up = UpstreamSettings(base_url=app[MOCK_URL], api_key_env="")
            effective = msgspec.structs.replace(
                settings, upstreams={name: mock_up for name in settings.upstreams}
            )
        app[ROUTER] = Router(effective, env)
        t = settings.timeouts
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=t.connect),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            # Upstream APIs set no cookies we want, and filtering a jar costs per request.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        app[UPSTREAM] = UpstreamClient(
            session,
            settings.timeouts,
            settings.retries,
            max_body_bytes=settings.server.max_upstream_body_bytes,
        )
        app[COUNTER] = TokenCounter(app[UPSTREAM])
        try:
            yield
        finally:
            await session.close()

    if settings.mock:
        app.cleanup_ctx.append(mock_ctx)
    app.cleanup_ctx.append(upstream_ctx)
    return app
