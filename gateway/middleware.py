"""The request middleware: correlation id → inbound auth → access log → error rendering.

One middleware function rather than four: each layer costs a coroutine frame per request and
this path is hot (issue 7). Its sections run in the design's order.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

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
from .translate.common import random_b62

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


class InFlight:
    """Requests to /v1/messages* being handled now (the overload guard; read by metrics)."""

    __slots__ = ("limit", "value")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.value = 0


Observer = Callable[[RequestContext, int, str], None]


def make_middleware(
    api_keys: tuple[str, ...], in_flight: InFlight, observe: Observer | None = None
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Build the middleware; ``api_keys`` empty means inbound auth is off; ``observe`` is
    called once per finished request (metrics)."""
    keys = tuple(k.encode() for k in api_keys)
    open_paths = frozenset({"/", "/healthz", "/readyz"})

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
        counted = False
        try:
            # 2. inbound auth (health endpoints stay open)
            if keys and path not in open_paths and not authorised(request):
                raise AuthenticationError("invalid x-api-key")
            # 3. overload guard: shed load with a retryable 529 rather than queue without end
            if path.startswith("/v1/messages"):
                if in_flight.limit and in_flight.value >= in_flight.limit:
                    raise OverloadedError(
                        "the gateway is at its in-flight request limit",
                        headers={"retry-after": "1"},
                    )
                in_flight.value += 1
                counted = True
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
            raise
        except Exception as exc:
            log_exception("internal_error", exc, id=cid)
            resp = error_response(APIError("internal gateway error"), ctx)
        finally:
            if counted:
                in_flight.value -= 1
            if resp is not None and not resp.prepared:
                resp.headers["request-id"] = rid
                resp.headers[CORRELATION_HEADER] = cid
            status = _log_summary(request, ctx, resp)
            if observe is not None:
                observe(ctx, status, path)
            correlation_id.reset(reset)
        return resp

    return gateway_middleware


def _log_summary(request: web.Request, ctx: RequestContext, resp: web.StreamResponse | None) -> int:
    usage = ctx.usage
    status = resp.status if resp is not None else 499
    outcome = ctx.outcome
    if outcome is None:
        outcome = "completed" if status < 400 else "error"
    log_event(
        "request_end",
        id=ctx.cid,
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
