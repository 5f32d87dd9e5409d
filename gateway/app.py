"""create_app(settings): routes, middleware, one ClientSession in cleanup_ctx, typed AppKeys.

Nothing happens at import time; everything with a lifetime (the ClientSession, the in-process
mock upstream) is created in ``cleanup_ctx`` and closed there.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final

import aiohttp
import msgspec
from aiohttp import web

from .accounts.dashboard import add_account_routes
from .accounts.keyfile import KeyFileError
from .accounts.ledger import Ledger, backend_for
from .accounts.service import Accounts
from .admission import InFlight
from .anthropic.signatures import Signer
from .batches import add_batch_routes
from .count_tokens import TokenCounter
from .failover.chain import Resilience
from .failover.keys import KeyPoolError, make_pools
from .files import add_file_routes
from .handlers import add_routes
from .keys import (
    ACCOUNTS,
    COUNTER,
    IN_FLIGHT,
    LIFECYCLE,
    METRICS,
    MOCK_URL,
    RESILIENCE,
    ROUTER,
    SAFEGUARDS,
    SETTINGS,
    SHARED,
    SIGNER,
    TRACING,
    UPSTREAM,
)
from .lifecycle import Lifecycle
from .logs import log_event
from .metrics import Metrics
from .middleware import make_middleware
from .routing import Router
from .safeguards.classifier import Safeguards
from .settings import Settings, UpstreamSettings
from .shared import Shared
from .startup import StartupError, api_keys_from, load_prompt, signing_keys, state_dir, writable
from .tracing import Tracing
from .upstream import UpstreamClient

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

#: Seconds aiohttp gives handlers to finish after ``on_shutdown`` (``shutdown_timeout``). By then
#: ``_drain`` has ended every stream and waiting request, so this only covers writing their last
#: bytes; aiohttp waits it out at most twice, so SIGTERM ends the process within
#: ``shutdown_grace`` + ~2 × this (issue 10 item 2; systemd's TimeoutStopSec is 45 s).
SHUTDOWN_FLUSH = 2.0


class GatewayRunner(web.AppRunner):
    """aiohttp's AppRunner, with a first step to its shutdown: /readyz turns 503 and the
    gateway keeps serving, listening socket open, for ``server.drain_delay`` seconds, so that a
    load balancer stops sending before connections close (issue 11 item 6)."""

    async def cleanup(self) -> None:
        app = self.app
        life = app[LIFECYCLE]
        if not life.draining:
            life.draining = True
            log_event("gateway_draining", logging.WARNING, count=app[IN_FLIGHT].active)
            delay = app[SETTINGS].server.drain_delay
            if delay:
                await asyncio.sleep(delay)
        await super().cleanup()


def make_runner(app: web.Application) -> GatewayRunner:
    return GatewayRunner(
        app,
        access_log=None,
        # the client leaving cancels its handler, which closes the upstream request at once
        handler_cancellation=True,
        # on_shutdown gives requests `shutdown_grace` seconds, then ends them all; this is how
        # long aiohttp then waits for their handlers to write their last bytes.
        shutdown_timeout=SHUTDOWN_FLUSH,
    )


#: young-generation collections every this many net allocations instead of Python's 700: a
#: request allocates a few hundred objects, nearly none of them in cycles (issue 19: -4 % CPU per
#: small request at c=16; the benchmark's RSS probes unchanged, the soak's plateau 5-10 MB up)
GC_YOUNG_THRESHOLD: Final = 20_000


def tune_gc() -> None:
    """Once the gateway is serving: what start-up built (settings, routes, the app, imported
    modules) moves out of the collector's sight for good (``gc.freeze``), and young collections
    become rarer. Cycles are still collected, only in larger batches."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


#: glibc's malloc, set once at start (issue 19): a block under 1 MiB (a 150 KB request body, its
#: decoded copy, an upstream answer) comes from the heap rather than its own mmap, and up to
#: 4 MiB left free at the heap's top stays mapped. With glibc's adaptive defaults a process
#: could settle, at random, into giving memory back after every request and faulting it in again
#: on the next: ~90 page faults and +25 % CPU for a 150 KB request at c=1.
MALLOC_MMAP_THRESHOLD: Final = 1 << 20
MALLOC_TRIM_THRESHOLD: Final = 4 << 20
_M_TRIM_THRESHOLD: Final = -1  # <malloc.h>
_M_MMAP_THRESHOLD: Final = -3


def tune_malloc(env: Mapping[str, str] = os.environ) -> bool:
    """Fix glibc's mmap and trim thresholds (see ``MALLOC_MMAP_THRESHOLD``) unless the
    environment sets either (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``: the
    operator's choice stands). False where they were not set: another C library, or the
    environment's."""
    if "MALLOC_MMAP_THRESHOLD_" in env or "MALLOC_TRIM_THRESHOLD_" in env:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
        and mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)
    )


def serve(app: web.Application, sock: socket.socket) -> None:
    """Serve ``app`` on the listening ``sock`` until SIGTERM/SIGINT, then shut down gracefully
    (drain delay, grace, the rest ended) and return."""

    tune_malloc()

    async def main() -> None:
        runner = make_runner(app)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            tune_gc()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            # SIGHUP: read the keys file again now (it is also watched for changes)
            loop.add_signal_handler(signal.SIGHUP, app[ACCOUNTS].reload_if_configured)
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


async def _drain(app: web.Application) -> None:
    """Graceful shutdown (issue 5): the listening sockets are closed already; give requests in
    flight ``shutdown_grace`` seconds, then end the rest at once (``Lifecycle.end_all``)."""
    life = app[LIFECYCLE]
    life.draining = True
    in_flight = app[IN_FLIGHT]
    grace = app[SETTINGS].server.shutdown_grace
    loop = asyncio.get_running_loop()
    end = loop.time() + grace
    while in_flight.active and (left := end - loop.time()) > 0:  # noqa: ASYNC110 - shutdown poll
        await asyncio.sleep(min(0.05, left))
    ended = life.end_all()
    if ended:
        log_event("shutdown_ending_requests", logging.WARNING, count=ended)


def create_app(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    signing_key: bytes | Sequence[bytes] | None = None,
    tracing_exporter: SpanExporter | None = None,
) -> web.Application:
    """Build the gateway application. ``env`` defaults to ``os.environ`` (upstream and inbound
    keys; the signing key ring unless ``signing_key`` is given). Raises StartupError for bad
    keys (``python -m gateway`` has checked them before, and exits 2 with the line), and for
    tracing without OpenTelemetry; ``tracing_exporter`` (tests) receives the spans."""
    env = dict(os.environ if env is None else env)
    in_flight = InFlight(settings.server.max_in_flight, settings.server.max_receiving)
    life = Lifecycle()
    metrics = Metrics(in_flight=lambda: in_flight.value, open_streams=lambda: len(life.streams))
    shared = Shared(settings.redis, on_state=metrics.redis_state)  # a fleet's Redis, if any
    try:
        accounts = Accounts(
            settings, api_keys_from(env), metrics, make_ledger(settings, env), shared
        )
    except (KeyFileError, ValueError) as exc:
        raise StartupError(str(exc)) from None
    if accounts.ledger is not None:
        accounts.ledger.on_dropped = metrics.ledger_dropped.inc
    tracing = Tracing(settings.tracing, exporter=tracing_exporter)
    middleware = make_middleware(
        accounts,
        in_flight,
        metrics.observe,
        send_timeout=settings.timeouts.client_send,
        tracing=tracing,
    )
    app = web.Application(middlewares=[middleware], client_max_size=settings.server.max_body_bytes)
    in_flight.gauge = metrics.in_flight_gauge
    life.streams.gauge = metrics.streams_gauge
    app[SETTINGS] = settings
    app[IN_FLIGHT] = in_flight
    app[LIFECYCLE] = life
    app[METRICS] = metrics
    app[ACCOUNTS] = accounts
    app[SHARED] = shared
    app.on_shutdown.append(_drain)
    app[TRACING] = tracing
    app.cleanup_ctx.append(tracing.cleanup_ctx)  # first: started first, flushed last
    app[SIGNER] = Signer(signing_key or signing_keys(env).keys)
    safeguard_prompt = load_prompt(settings)
    try:  # the mock's stand-in upstreams need no keys
        pools = {} if settings.mock else make_pools(settings.upstreams, env)
    except KeyPoolError as exc:
        raise StartupError(str(exc)) from None
    for pool in pools.values():
        pool.on_event = metrics.key_event
    add_routes(app)
    add_file_routes(app)
    add_batch_routes(app)

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
            # Upstream APIs set no cookies we want, and filtering a jar costs per request.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        app[UPSTREAM] = UpstreamClient(
            session,
            settings.timeouts,
            settings.retries,
            max_body_bytes=settings.server.max_upstream_body_bytes,
            pools=pools,
        )
        app[RESILIENCE] = Resilience(
            effective, app[UPSTREAM], on_fallback=metrics.fallback,
            on_circuit=metrics.circuit_state, shared=shared,
        )  # fmt: skip
        for target in app[ROUTER].targets():
            metrics.circuit_state(target.name, "closed")
        app[COUNTER] = TokenCounter(app[UPSTREAM], shared=shared)
        app[SAFEGUARDS] = Safeguards(
            effective, app[ROUTER], app[RESILIENCE], metrics, life, safeguard_prompt
        )
        try:
            yield
        finally:
            await session.close()

    async def accounts_ctx(app: web.Application) -> AsyncIterator[None]:
        await shared.start()  # a fleet's Redis (down at start: local state, said loudly)
        await accounts.start()  # the ledger opens; keys are watched
        try:
            yield
        finally:
            await accounts.close()  # after the drain: every request's row is written
            await shared.close()

    if settings.mock:
        app.cleanup_ctx.append(mock_ctx)
    app.cleanup_ctx.append(accounts_ctx)
    app.cleanup_ctx.append(upstream_ctx)
    add_account_routes(app)
    return app


def make_ledger(settings: Settings, env: Mapping[str, str]) -> Ledger | None:
    """The usage ledger the settings ask for: PostgreSQL when ``ledger.dsn_env`` names a
    variable holding a DSN, else SQLite at ``ledger.path`` (default: the state directory)."""
    ls = settings.ledger
    if not ls.enabled:
        return None
    dsn = ""
    if ls.dsn_env:
        dsn = env.get(ls.dsn_env, "").strip()
        if not dsn:
            raise StartupError(f"ledger.dsn_env: {ls.dsn_env} is not set")
    if not ls.path and not writable(state_dir(env)):
        log_event("ledger_off", logging.WARNING, reason="the state directory cannot be written")
        return None
    path = ls.path or str(state_dir(env) / "usage.db")
    return Ledger(
        backend_for(path, dsn),
        batch_size=ls.batch_size,
        flush_interval=ls.flush_interval,
        max_pending=ls.max_pending,
    )
