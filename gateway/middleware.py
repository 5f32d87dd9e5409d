"""The request middleware: correlation id → inbound auth → access log → error rendering.

One middleware function rather than four: each layer costs a coroutine frame per request and
this path is hot (issue 7). Its sections run in the design's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from .anthropic.ids import random_b62
from .errors import (
    APIError,
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    RequestTooLargeError,
    error_body,
)
from .logs import correlation_id, log_event, log_exception
from .schemas.anthropic import Usage

try:  # the kernel's send queue per socket: Linux and the BSDs
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover - Windows
    _OUTQ = None

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CID_RE: Final = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
CORRELATION_HEADER: Final = "X-Correlation-ID"


class RequestContext:
    """What one request's summary log line reports (allow-listed fields only)."""

    __slots__ = (
        "attempts",
        "cid",
        "error_type",
        "events",
        "model",
        "outcome",
        "overhead_ms",
        "request_id",
        "route",
        "sent_status",
        "stage",
        "start",
        "stop_reason",
        "stream",
        "ttfb_ms",
        "upstream_ms",
        "upstream_status",
        "usage",
    )

    def __init__(self, cid: str, request_id: str) -> None:
        self.cid = cid
        self.request_id = request_id
        self.start = time.perf_counter()
        self.model: str | None = None
        self.route: str | None = None
        self.stream: bool | None = None
        self.upstream_status: int | None = None
        self.upstream_ms: float | None = None
        self.attempts = 0
        self.ttfb_ms: float | None = None
        self.events: int | None = None
        self.usage: tuple[int, int, int, int] | None = None
        self.stop_reason: str | None = None
        self.error_type: str | None = None
        self.outcome: str | None = None
        self.overhead_ms: float | None = None
        self.stage = NOT_COUNTED
        #: the status a streamed answer already sent (its handler may end without a response)
        self.sent_status: int | None = None

    def finish(self, usage: Usage, stop_reason: str | None) -> None:
        """Record the answer's usage and stop reason for the summary line and metrics."""
        self.usage = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens,
        )
        self.stop_reason = stop_reason

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.start) * 1000.0, 3)


CTX_KEY: Final = web.RequestKey("gateway_ctx", RequestContext)


def error_response(err: GatewayError, ctx: RequestContext) -> web.Response:
    """An Anthropic JSON error response with the status and headers the error carries."""
    ctx.error_type = err.error_type
    if ctx.upstream_status is None and err.upstream_status is not None:
        ctx.upstream_status = err.upstream_status
    resp = web.Response(
        status=err.status,
        body=error_body(err, ctx.request_id),
        content_type="application/json",
        headers=err.response_headers(),
    )
    return resp


#: RequestContext.stage: where a /v1/messages* request stands in admission
NOT_COUNTED: Final = 0
RECEIVING: Final = 1
ADMITTED: Final = 2


class InFlight:
    """Admission for /v1/messages* (the overload guard; read by metrics and shutdown).

    A request is *receiving* until its whole body is in, then *admitted* (``value``): a slot
    is taken only once there is a complete request to work on, so bodies still trickling in
    never starve complete requests of slots (issue 10 item 3). Both counts have their own limit
    (0 = none); beyond either, 529 overloaded_error + retry-after.
    """

    __slots__ = ("gauge", "limit", "receiving", "receiving_limit", "value")

    def __init__(self, limit: int, receiving_limit: int = 0) -> None:
        self.limit = limit
        self.value = 0
        self.receiving_limit = receiving_limit
        self.receiving = 0
        #: a multiprocess gauge moved with ``value`` (``--workers``); None: read by callback
        self.gauge: Any = None

    @property
    def active(self) -> int:
        return self.value + self.receiving

    def start(self, ctx: RequestContext) -> None:
        """A request arrived; its body has yet to be read."""
        if self.receiving_limit and self.receiving >= self.receiving_limit:
            raise OverloadedError(
                "the gateway is receiving too many request bodies at once",
                headers={"retry-after": "1"},
            )
        self.receiving += 1
        ctx.stage = RECEIVING

    def admit(self, ctx: RequestContext) -> None:
        """The body is in: take an in-flight slot (or refuse with 529)."""
        if ctx.stage == RECEIVING:
            self.receiving -= 1
            ctx.stage = NOT_COUNTED
        if self.limit and self.value >= self.limit:
            raise OverloadedError(
                "the gateway is at its in-flight request limit", headers={"retry-after": "1"}
            )
        self.value += 1
        ctx.stage = ADMITTED
        if self.gauge is not None:
            self.gauge.inc()

    def release(self, ctx: RequestContext) -> None:
        stage = ctx.stage
        if stage == ADMITTED:
            self.value -= 1
            if self.gauge is not None:
                self.gauge.dec()
        elif stage == RECEIVING:
            self.receiving -= 1
        ctx.stage = NOT_COUNTED


class StallCheck:
    """Tells a client that has taken no bytes for ``timeout`` seconds from one that is slow.

    A write stays blocked until the transport's buffer drains below its low-water mark, which
    for a large write to a slow reader can take long while bytes still flow; so progress is
    the buffer shrinking between two looks, and only a write with none for ``timeout`` seconds
    counts as stalled (issue 10 item 1).
    """

    __slots__ = ("_fd", "_size", "since", "timeout", "transport")

    def __init__(self, transport: asyncio.Transport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout
        self.since = 0.0
        self._size = -1
        sock = transport.get_extra_info("socket")
        self._fd: int = sock.fileno() if sock is not None and _OUTQ is not None else -1

    def begin(self, now: float) -> None:
        """A write starts blocking (or may): no progress seen yet."""
        self.since = now
        self._size = -1

    def stalled(self, now: float) -> bool:
        """Look at the buffer now; True when it has not shrunk for ``timeout`` seconds."""
        size = self.transport.get_write_buffer_size() + self._kernel_queue()
        if 0 <= size < self._size:
            self.since = now  # the client took bytes since the last look
        self._size = size
        return now - self.since >= self.timeout

    def _kernel_queue(self) -> int:
        # The kernel's send buffer holds megabytes and the socket turns writable only once a
        # third of it is free, so a slow reader drains it long before the transport's own
        # buffer moves: count the bytes the kernel still holds too (Linux SIOCOUTQ).
        if self._fd < 0 or _OUTQ is None:
            return 0
        try:
            raw = fcntl.ioctl(self._fd, _OUTQ, b"\0\0\0\0")
        except OSError:
            return 0
        queued: int = struct.unpack("i", raw)[0]
        return queued

    @property
    def period(self) -> float:
        """How often to look while a write is blocked."""
        return self.timeout / 4


async def send_response(
    request: web.Request, resp: web.StreamResponse, send_timeout: float, ctx: RequestContext
) -> None:
    """Write a whole (not yet prepared) response, cutting a client that takes no bytes for
    ``send_timeout`` seconds (issue 10 item 1): one timer, no task, on the hot path."""
    transport = request.transport
    if transport is None:
        return
    loop = asyncio.get_running_loop()
    check = StallCheck(transport, send_timeout)
    check.begin(loop.time())
    handle: asyncio.TimerHandle | None = None

    def look() -> None:
        nonlocal handle
        now = loop.time()
        if check.stalled(now):
            ctx.outcome = "client_stalled"
            reset_connection(transport)
        else:
            handle = loop.call_at(now + check.period, look)

    handle = loop.call_at(loop.time() + check.period, look)
    try:
        await resp.prepare(request)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        ctx.outcome = ctx.outcome or "client_closed"
    finally:
        handle.cancel()


_LINGER_RESET: Final = struct.pack("ii", 1, 0)


def reset_connection(transport: asyncio.Transport) -> None:
    """Drop a client connection at once, with a TCP reset.

    ``abort()`` wakes a write blocked on the connection; SO_LINGER 0 makes the close a reset,
    so the kernel frees the megabytes still queued for a client that stopped reading instead
    of probing its zero window for as long as it answers.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


Observer = Callable[[RequestContext, int, str], None]


def make_middleware(
    api_keys: tuple[str, ...],
    in_flight: InFlight,
    observe: Observer | None = None,
    *,
    send_timeout: float = 30.0,
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Build the middleware; ``api_keys`` empty means inbound auth is off; ``observe`` is
    called once per finished request (metrics); ``send_timeout`` bounds writing a response
    that the handler returned unsent."""
    keys = tuple(k.encode() for k in api_keys)
    open_paths = frozenset({"/", "/healthz", "/readyz", "/api/hello"})

    def authorised(request: web.Request) -> bool:
        given = request.headers.get("x-api-key")
        if given is None:
            auth = request.headers.get("Authorization", "")
            if auth[:7].lower() == "bearer ":
                given = auth[7:].strip()
        if not given:
            return False
        raw = given.encode()
        ok = False
        for k in keys:  # no early exit: constant time over the key list
            ok |= hmac.compare_digest(raw, k)
        return ok

    @web.middleware
    async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # 1. correlation id: the client's if well-formed, else minted; never echoed raw.
        token = random_b62(24)
        rid = "req_" + token
        cid = request.headers.get(CORRELATION_HEADER)
        if cid is None or not _CID_RE.match(cid):
            cid = rid
        ctx = RequestContext(cid, rid)
        request[CTX_KEY] = ctx
        reset = correlation_id.set(cid)
        path = request.path
        log_event("request_start", id=cid, method=request.method, path=path)
        resp: web.StreamResponse | None = None
        try:
            # 2. inbound auth (health endpoints stay open)
            if keys and path not in open_paths and not authorised(request):
                raise AuthenticationError("invalid x-api-key")
            # 3. overload guard: shed load with a retryable 529 rather than queue without end;
            # the in-flight slot itself is taken once the body is in (InFlight.admit)
            if path.startswith("/v1/messages"):
                in_flight.start(ctx)
            resp = await handler(request)
        except GatewayError as err:
            resp = error_response(err, ctx)
        except web.HTTPRequestEntityTooLarge as exc:
            resp = error_response(RequestTooLargeError(f"request body too large: {exc.text}"), ctx)
        except web.HTTPMethodNotAllowed as exc:
            resp = error_response(
                InvalidRequestError(f"method {request.method} not allowed for {path[:100]}"), ctx
            )
            resp.headers["Allow"] = exc.headers.get("Allow", "")
            resp.set_status(405)
        except web.HTTPNotFound:
            resp = error_response(NotFoundError(f"no such endpoint: {path[:100]}"), ctx)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            resp = error_response(InvalidRequestError(exc.reason), ctx)
            resp.set_status(exc.status)
        except (asyncio.CancelledError, ConnectionResetError):
            ctx.outcome = ctx.outcome or "client_closed"
            in_flight.release(ctx)  # before the log line: metrics read the gauge
            status = _log_summary(request, ctx, None)
            if observe is not None:
                observe(ctx, status, path)
            correlation_id.reset(reset)
            raise
        except Exception as exc:
            log_exception("internal_error", exc, id=cid)
            resp = error_response(APIError("internal gateway error"), ctx)
        finally:
            in_flight.release(ctx)
        assert resp is not None  # every branch above answers or re-raises
        try:
            if not resp.prepared:
                resp.headers["request-id"] = rid
                resp.headers[CORRELATION_HEADER] = cid
                if resp.status >= 400 and not request.content.is_eof():
                    # The body never fully arrived (408, 413, 529): do not wait to drain it.
                    resp.force_close()
                await send_response(request, resp, send_timeout, ctx)
        finally:
            status = _log_summary(request, ctx, resp)
            if observe is not None:
                observe(ctx, status, path)
            correlation_id.reset(reset)
        return resp

    return gateway_middleware


#: Outcomes of a 200 stream that are failures: logged at warning, upstream errors at error.
_STREAM_WARNINGS: Final = frozenset({"upstream_timeout", "timeout", "client_stalled", "shutdown"})


def _level(status: int, outcome: str) -> int:
    """Errors at warning or error, so ``--log-level warning`` still shows every one of them
    (issue 11 item 12): 5xx (not our own 529 load shedding) and upstream failures are errors,
    other refusals and cut streams warnings, the rest info."""
    if (status >= 500 and status != 529) or outcome == "upstream_error":
        return logging.ERROR
    if status >= 400 or outcome in _STREAM_WARNINGS:
        return logging.WARNING
    return logging.INFO


def _log_summary(request: web.Request, ctx: RequestContext, resp: web.StreamResponse | None) -> int:
    usage = ctx.usage
    status = resp.status if resp is not None else (ctx.sent_status or 499)
    outcome = ctx.outcome
    if outcome is None:
        outcome = "completed" if status < 400 else "error"
    log_event(
        "request_end",
        _level(status, outcome),
        id=ctx.cid,
        # the request_id clients see in error bodies, when a client correlation id replaced it
        request_id=ctx.request_id if ctx.cid != ctx.request_id else None,
        method=request.method,
        path=request.path[:100],
        model=ctx.model,
        route=ctx.route,
        stream=ctx.stream,
        status=status,
        duration_ms=ctx.elapsed_ms(),
        ttfb_ms=ctx.ttfb_ms,
        upstream_status=ctx.upstream_status,
        upstream_ms=ctx.upstream_ms,
        attempts=ctx.attempts or None,
        events=ctx.events,
        input_tokens=usage[0] if usage else None,
        output_tokens=usage[1] if usage else None,
        cache_read_input_tokens=usage[2] if usage else None,
        cache_creation_input_tokens=usage[3] if usage else None,
        stop_reason=ctx.stop_reason,
        error_type=ctx.error_type,
        outcome=outcome,
    )
    return status
