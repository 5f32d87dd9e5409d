"""Where upstream bytes meet the client socket: decoder → translator → writes.

The relay owns the upstream response and closes it in ``finally`` (design.md item 10). After
``prepare()`` (the 200 is sent only once the upstream answered 200) an error can only be one
``event: error`` frame followed by the end of the stream (item 8).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Final

import aiohttp
from aiohttp import web

from .context import CORRELATION_HEADER, RequestContext
from .dialects.base import StreamTranslator
from .errors import APIError, GatewayError, GatewayTimeoutError
from .safeguards.tap import SafeguardTap
from .safeguards.verdicts import ToolCall
from .sending import StallCheck, reset_connection
from .sse import SSEDecoder, SSEError

PING_FRAME: Final = b'event: ping\ndata: {"type":"ping"}\n\n'


class StreamAbort(Exception):
    """Injected into the upstream reader to end a stream with ``error`` (an idle upstream, the
    whole-request cap, a shutdown past its grace period)."""

    def __init__(self, error: GatewayError, outcome: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.outcome = outcome


class ClientGone(Exception):
    """The client closed its connection, or was cut for taking no bytes (``Watchdog.cut``)."""


#: Seconds the last frames (an error event, the end of the stream) get once a stream is being
#: ended from outside: a client that is not reading must not hold a shutdown up.
FINAL_WRITE_TIMEOUT: Final = 2.0


class Watchdog:
    """Every time bound of one stream on one timer: upstream idle, the whole-request deadline,
    keep-alive pings, and writes to the client that make no progress.

    Per upstream chunk the relay only calls ``touch()`` (an attribute store) and writes through
    ``send()`` (a counter and a time); the timer callback runs once per ``ping`` seconds of
    silence, not per chunk. A blocked write during which the client takes no bytes for
    ``send_timeout`` seconds (``StallCheck``) cuts the client: its connection is reset, which
    wakes the write, and the stream ends with outcome ``client_stalled`` (issue 10 item 1).
    ``abort()`` ends the stream from outside (the total cap, graceful shutdown): with an error
    event when the client is reading, by cutting it when the relay is blocked writing to it.
    """

    __slots__ = (
        "_due",
        "_handle",
        "_loop",
        "_outcome",
        "_response",
        "_stall",
        "_task",
        "_transport",
        "_writing",
        "content",
        "cut",
        "deadline",
        "idle",
        "last",
        "ping",
        "send_timeout",
    )

    def __init__(
        self,
        response: web.StreamResponse,
        content: aiohttp.StreamReader,
        transport: asyncio.Transport | None,
        *,
        idle: float,
        ping: float,
        send_timeout: float,
        deadline: float | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._response = response
        self._transport = transport
        self.content = content
        self.idle = idle
        self.ping = ping
        self.send_timeout = send_timeout
        self.deadline = deadline
        self.last = self._loop.time()
        self._writing = 0
        self._stall = StallCheck(transport, send_timeout) if transport is not None else None
        self._outcome: str | None = None  # set once the stream is being ended from outside
        #: the outcome when the watchdog cut the client (None while it has not)
        self.cut: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = math.inf
        self._schedule(self._next_check())

    def touch(self) -> None:
        self.last = self._loop.time()

    async def send(self, data: bytes) -> None:
        """Write ``data`` to the client; ClientGone when it left or was cut meanwhile."""
        await self._guarded(self._response.write(data))

    async def end(self) -> None:
        """Finish the response (the last chunk), bounded like any write."""
        await self._guarded(self._response.write_eof())

    async def _guarded(self, write: Coroutine[Any, Any, None]) -> None:
        if self._writing == 0 and self._stall is not None:
            now = self._loop.time()
            self._stall.begin(now)
            if self._due > now + self.send_timeout:
                self._schedule(now + self._stall.period)
        self._writing += 1
        try:
            await write
        except (OSError, RuntimeError) as exc:  # ConnectionResetError, closing transport
            raise ClientGone() from exc
        finally:
            self._writing -= 1
        if self.cut is not None:
            raise ClientGone()

    def abort(self, error: GatewayError, outcome: str) -> None:
        """End the stream with ``error``: an error event, or a cut when blocked writing."""
        if self._outcome is not None or self.cut is not None:
            return
        self._outcome = outcome
        self.send_timeout = min(self.send_timeout, FINAL_WRITE_TIMEOUT)
        if self._stall is not None:
            self._stall.timeout = self.send_timeout
        if self._writing:
            self._cut(outcome)
            return
        self.content.set_exception(StreamAbort(error, outcome))
        self._schedule(self._next_check())

    def _cut(self, outcome: str) -> None:
        self.cut = outcome
        if self._transport is not None:
            reset_connection(self._transport)  # wakes a blocked write; nothing more is sent
        # The relay may be waiting on the upstream while a ping was the stuck write.
        self.content.set_exception(ClientGone())

    def _schedule(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._due = when
        self._handle = None if when == math.inf else self._loop.call_at(when, self._tick)

    def _next_check(self) -> float:
        due = math.inf
        if self._outcome is None:
            silent = self._loop.time() - self.last
            pings_sent = int(silent // self.ping)
            due = min(self.last + (pings_sent + 1) * self.ping, self.last + self.idle)
            if self.deadline is not None:
                due = min(due, self.deadline)
        if self._writing and self._stall is not None:
            due = min(due, self._loop.time() + self._stall.period)
        return due

    def _tick(self) -> None:
        self._handle = None
        if self.cut is not None:
            return
        now = self._loop.time()
        if self._writing and self._stall is not None and self._stall.stalled(now):
            self._cut(self._outcome or "client_stalled")
            return
        if self._outcome is None:
            silent = now - self.last
            if self.deadline is not None and now >= self.deadline:
                self.abort(
                    GatewayTimeoutError("request exceeded the gateway's total time cap"), "timeout"
                )
                return
            if silent >= self.idle and not self._writing:
                self.abort(
                    GatewayTimeoutError(f"upstream stream was silent for {self.idle:g}s"),
                    "upstream_timeout",
                )
                return
            if (
                silent >= self.ping
                and not self._writing
                and (self._task is None or self._task.done())
            ):
                self._task = self._loop.create_task(self._send_ping())
        self._schedule(self._next_check())

    async def _send_ping(self) -> None:
        # A client that left is seen by the relay on its next write; one that stopped reading
        # is cut by the timer like any other blocked write.
        with contextlib.suppress(ClientGone):
            await self.send(PING_FRAME)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._task is not None and not self._task.done():
            self._task.cancel()


class StreamRegistry:
    """The streams open now (their watchdogs), for graceful shutdown and the metrics gauge."""

    __slots__ = ("_open", "gauge")

    def __init__(self) -> None:
        self._open: set[Watchdog] = set()
        #: a multiprocess gauge moved with the count (``--workers``); None: read by callback
        self.gauge: Any = None

    def add(self, watchdog: Watchdog) -> None:
        self._open.add(watchdog)
        if self.gauge is not None:
            self.gauge.inc()

    def discard(self, watchdog: Watchdog) -> None:
        if watchdog in self._open:
            self._open.remove(watchdog)
            if self.gauge is not None:
                self.gauge.dec()

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Watchdog]:
        return iter(list(self._open))


#: ``(tool calls, ids of calls cut short, stop_reason) -> safeguard_results``
Verdicts = Callable[[list[ToolCall], list[str], str | None], Awaitable[list[dict[str, Any]]]]


def _tapped(
    send: Callable[[bytes], Awaitable[None]], tap: SafeguardTap
) -> Callable[[bytes], Awaitable[None]]:
    async def tapped(data: bytes) -> None:
        data = tap.feed(data)
        if data:
            await send(data)

    return tapped


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
    send_timeout: float = 30.0,
    ping_interval: float = 10.0,
    max_event_bytes: int = 16 * 1024 * 1024,
    deadline: float | None = None,
    registry: StreamRegistry | None = None,
    overhead: Callable[[], str] | None = None,
    safeguard: Verdicts | None = None,
) -> web.StreamResponse:
    """Stream ``upstream`` (a 200 SSE response) to the client through ``translator``.

    ``safeguard`` (Claude Code's auto mode): the tool calls are recorded on their way out, and
    the final ``message_delta`` waits for their verdicts (``safeguards.tap``)."""
    response = sse_response(ctx)
    if overhead is not None:
        response.headers["x-gateway-overhead-ms"] = overhead()
    decoder = SSEDecoder(max_event_bytes)
    fully_read = False
    watchdog: Watchdog | None = None
    ctx.outcome = "completed"

    try:
        await response.prepare(request)
        ctx.sent_status = 200
        watchdog = Watchdog(
            response,
            upstream.content,
            request.transport,
            idle=idle_timeout,
            ping=ping_interval,
            send_timeout=send_timeout,
            deadline=deadline,
        )
        if registry is not None:
            registry.add(watchdog)
        tap = SafeguardTap() if safeguard is not None else None
        send = watchdog.send if tap is None else _tapped(watchdog.send, tap)
        failure: GatewayError | None = None
        try:
            async for chunk in upstream.content.iter_any():
                watchdog.touch()
                frames = translator.feed_many(decoder.feed(chunk))
                if frames:
                    await send(b"".join(frames))
                    if ctx.ttfb_ms is None:
                        ctx.ttfb_ms = ctx.elapsed_ms()
                if translator.done:
                    break
            else:
                fully_read = True
                frames = translator.feed_many(decoder.finish())
                if not translator.done:
                    frames += translator.finish()
                if frames:
                    await send(b"".join(frames))
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
                await send(b"".join(frames))
        err = translator.error
        if err is not None:
            ctx.error_type = err.error_type
            if ctx.outcome == "completed":
                ctx.outcome = "upstream_error"
        if tap is not None and tap.held is not None and safeguard is not None:
            calls, broken = tap.tool_calls()
            results = await safeguard(calls, broken, tap.stop_reason)
            await watchdog.send(tap.release(results))
        await watchdog.end()
    except ClientGone:
        ctx.outcome = (watchdog.cut if watchdog is not None else None) or "client_closed"
    except asyncio.CancelledError:
        ctx.outcome = (watchdog.cut if watchdog is not None else None) or "client_closed"
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
