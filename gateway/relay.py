"""Where upstream bytes meet the client socket: decoder → translator → writes.

The relay owns the upstream response and closes it in ``finally`` (design.md item 10). After
``prepare()`` (the 200 is sent only once the upstream answered 200) an error can only be one
``event: error`` frame followed by the end of the stream (item 8).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final, Protocol

import aiohttp
from aiohttp import web

from .errors import APIError, GatewayError, GatewayTimeoutError
from .middleware import CORRELATION_HEADER, RequestContext
from .schemas.anthropic import Usage
from .sse import SSEDecoder, SSEError, SSEEvent

PING_FRAME: Final = b'event: ping\ndata: {"type":"ping"}\n\n'


class StreamTranslator(Protocol):
    """The incremental contract every upstream stream dialect implements."""

    @property
    def done(self) -> bool: ...
    @property
    def usage(self) -> Usage: ...
    @property
    def stop_reason(self) -> str | None: ...
    @property
    def frames_out(self) -> int: ...
    @property
    def error(self) -> GatewayError | None: ...

    def feed(self, event: SSEEvent) -> list[bytes]: ...
    def finish(self) -> list[bytes]: ...
    def fail(self, err: GatewayError) -> list[bytes]: ...


class StreamAbort(Exception):
    """Injected into the upstream reader to end a stream with ``error`` (an idle upstream, the
    whole-request cap, a shutdown past its grace period)."""

    def __init__(self, error: GatewayError, outcome: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.outcome = outcome


class _ClientGone(Exception):
    """The client closed its connection while we were writing."""


class Watchdog:
    """Idle timeout, whole-request deadline and keep-alive pings for one stream, on one timer.

    Per upstream chunk the relay only calls ``touch()`` (an attribute store); the timer
    callback runs once per ``ping`` seconds of silence, not per chunk. ``abort()`` ends the
    stream from outside (graceful shutdown).
    """

    __slots__ = (
        "_handle",
        "_loop",
        "_response",
        "_task",
        "content",
        "deadline",
        "idle",
        "last",
        "ping",
    )

    def __init__(
        self,
        response: web.StreamResponse,
        content: aiohttp.StreamReader,
        idle: float,
        ping: float,
        deadline: float | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._response = response
        self.content = content
        self.idle = idle
        self.ping = ping
        self.deadline = deadline
        self.last = self._loop.time()
        self._task: asyncio.Task[None] | None = None
        self._handle = self._loop.call_at(self._next_check(), self._tick)

    def touch(self) -> None:
        self.last = self._loop.time()

    def abort(self, error: GatewayError, outcome: str) -> None:
        self.content.set_exception(StreamAbort(error, outcome))

    def _next_check(self) -> float:
        silent = self._loop.time() - self.last
        pings_sent = int(silent // self.ping)
        due = min(self.last + (pings_sent + 1) * self.ping, self.last + self.idle)
        return due if self.deadline is None else min(due, self.deadline)

    def _tick(self) -> None:
        now = self._loop.time()
        silent = now - self.last
        if self.deadline is not None and now >= self.deadline:
            self.abort(
                GatewayTimeoutError("request exceeded the gateway's total time cap"), "timeout"
            )
            return
        if silent >= self.idle:
            self.abort(
                GatewayTimeoutError(f"upstream stream was silent for {self.idle:g}s"),
                "upstream_timeout",
            )
            return
        if silent >= self.ping and (self._task is None or self._task.done()):
            self._task = self._loop.create_task(self._send_ping())
        self._handle = self._loop.call_at(self._next_check(), self._tick)

    async def _send_ping(self) -> None:
        # A closed client is seen by the main loop on its next write.
        with contextlib.suppress(ConnectionResetError, RuntimeError, OSError):
            await self._response.write(PING_FRAME)

    def cancel(self) -> None:
        self._handle.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()


def sse_response(ctx: RequestContext) -> web.StreamResponse:
    resp = web.StreamResponse(status=200)
    h = resp.headers
    h["Content-Type"] = "text/event-stream; charset=utf-8"
    h["Cache-Control"] = "no-cache"
    h["X-Accel-Buffering"] = "no"
    h["request-id"] = ctx.request_id
    h[CORRELATION_HEADER] = ctx.cid
    return resp


async def relay(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    translator: StreamTranslator,
    ctx: RequestContext,
    *,
    idle_timeout: float,
    ping_interval: float = 10.0,
    max_event_bytes: int = 16 * 1024 * 1024,
    deadline: float | None = None,
    registry: set[Watchdog] | None = None,
    overhead: Callable[[], str] | None = None,
) -> web.StreamResponse:
    """Stream ``upstream`` (a 200 SSE response) to the client through ``translator``."""
    response = sse_response(ctx)
    if overhead is not None:
        response.headers["x-gateway-overhead-ms"] = overhead()
    decoder = SSEDecoder(max_event_bytes)
    fully_read = False
    watchdog: Watchdog | None = None
    ctx.outcome = "completed"

    async def write(data: bytes) -> None:
        try:
            await response.write(data)
        except (ConnectionResetError, RuntimeError, OSError) as exc:
            raise _ClientGone() from exc
        if ctx.ttfb_ms is None:
            ctx.ttfb_ms = ctx.elapsed_ms()

    try:
        await response.prepare(request)
        watchdog = Watchdog(response, upstream.content, idle_timeout, ping_interval, deadline)
        if registry is not None:
            registry.add(watchdog)
        failure: GatewayError | None = None
        try:
            async for chunk in upstream.content.iter_any():
                watchdog.touch()
                frames: list[bytes] = []
                for event in decoder.feed(chunk):
                    frames += translator.feed(event)
                    if translator.done:
                        break
                if frames:
                    await write(b"".join(frames))
                if translator.done:
                    break
            else:
                fully_read = True
                frames = []
                for event in decoder.finish():
                    if translator.done:
                        break
                    frames += translator.feed(event)
                if not translator.done:
                    frames += translator.finish()
                if frames:
                    await write(b"".join(frames))
        except StreamAbort as exc:
            failure = exc.error
            ctx.outcome = exc.outcome
        except SSEError as exc:
            failure = APIError(f"upstream sent an invalid event stream: {exc}")
            ctx.outcome = "upstream_error"
        except (aiohttp.ClientError, OSError) as exc:
            failure = APIError(f"upstream connection lost: {type(exc).__name__}")
            ctx.outcome = "upstream_error"
        if failure is not None:
            frames = translator.fail(failure)
            if frames:
                await write(b"".join(frames))
        err = translator.error
        if err is not None:
            ctx.error_type = err.error_type
            if ctx.outcome == "completed":
                ctx.outcome = "upstream_error"
        await response.write_eof()
    except _ClientGone:
        ctx.outcome = "client_closed"
    except asyncio.CancelledError:
        ctx.outcome = "client_closed"
        raise
    finally:
        if watchdog is not None:
            watchdog.cancel()
            if registry is not None:
                registry.discard(watchdog)
        # A half-read upstream connection must not go back to the pool.
        if fully_read:
            upstream.release()
        else:
            upstream.close()
        ctx.finish(translator.usage, translator.stop_reason)
        ctx.events = translator.frames_out
    return response
