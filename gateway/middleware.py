"""The request middleware: correlation id → inbound auth → access log → error rendering.

One middleware function rather than four: each layer costs a coroutine frame per request and
this path is hot (issue 7). Its sections run in the design's order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from .accounts.service import ANONYMOUS, Accounts
from .admission import InFlight
from .anthropic.ids import random_b62
from .context import CORRELATION_HEADER, CTX_KEY, RequestContext
from .errors import (
    APIError,
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    RequestTooLargeError,
    error_body,
)
from .logs import access_logger, correlation_id, log_event, log_exception
from .sending import send_response
from .tracing import Tracing

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CID_RE: Final = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


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


Observer = Callable[[RequestContext, int, str], None]


def make_middleware(
    accounts: Accounts,
    in_flight: InFlight,
    observe: Observer | None = None,
    *,
    send_timeout: float = 30.0,
    tracing: Tracing | None = None,
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Build the middleware; ``accounts`` knows the inbound keys (none: auth is off) and
    records what each request used; ``observe`` is called once per finished request
    (metrics); ``send_timeout`` bounds writing a response that the handler returned unsent;
    ``tracing``, when enabled, gives each request a span (its handler's work inside it)."""
    open_paths = frozenset({"/", "/healthz", "/readyz", "/api/hello"})
    traced = tracing if tracing is not None and tracing.enabled else None

    def identify(request: web.Request, ctx: RequestContext) -> bool:
        """Who the client is: ``x-api-key``, ``Authorization: Bearer``, or (the status page
        in a browser) ``Authorization: Basic`` with the key as the password."""
        given = request.headers.get("x-api-key")
        if given is None:
            auth = request.headers.get("Authorization", "")
            scheme = auth[:6].lower()
            if scheme == "bearer":
                given = auth[7:].strip()
            elif scheme == "basic ":
                given = _basic_password(auth[6:].strip())
        if not given:
            return False
        known, state = accounts.identify(given)
        if known:
            ctx.account = state
            ctx.key_name = state.name if state is not None else ANONYMOUS
        return known

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
        if traced is not None:
            traced.start_request(request, ctx)
        reset = correlation_id.set(cid)
        path = request.path
        probe = path in _PROBES  # a balancer's health checks: debug lines, not a flood at info
        log_event("request_start", logging.DEBUG if probe else logging.INFO, id=cid,
                  method=request.method, path=path)  # fmt: skip
        resp: web.StreamResponse | None = None
        try:
            # 2. inbound auth (health endpoints stay open)
            if accounts.auth_on and path not in open_paths and not identify(request, ctx):
                # a browser asks for the key (as a password) when the status page wants it
                ask = {"WWW-Authenticate": 'Basic realm="messages-gateway"'}
                raise AuthenticationError(
                    "invalid x-api-key", headers=ask if path.startswith("/dashboard") else None
                )
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
            if traced is not None:
                traced.end_request(request, ctx, status)
            accounts.finish(ctx, status, path)
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
            if traced is not None:
                traced.end_request(request, ctx, status)  # a stream's too: it has been written
            accounts.finish(ctx, status, path)
            if observe is not None:
                observe(ctx, status, path)
            correlation_id.reset(reset)
        return resp

    return gateway_middleware


#: Outcomes of a 200 stream that are failures: logged at warning, upstream errors at error.
_STREAM_WARNINGS: Final = frozenset({"upstream_timeout", "timeout", "client_stalled", "shutdown"})


#: load balancers' and orchestrators' health checks (issue 18): logged at debug when they pass
_PROBES: Final = frozenset({"/healthz", "/readyz"})


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
    level = logging.DEBUG if request.path in _PROBES and status < 400 else _level(status, outcome)
    if not access_logger.isEnabledFor(level):
        return status  # the line's two dozen fields are not even gathered (issue 19)
    log_event(
        "request_end",
        level,
        id=ctx.cid,
        # the request_id clients see in error bodies, when a client correlation id replaced it
        request_id=ctx.request_id if ctx.cid != ctx.request_id else None,
        method=request.method,
        path=request.path[:100],
        model=ctx.model,
        key_name=ctx.key_name,
        route=ctx.route,
        target=ctx.target if ctx.target != ctx.route else None,
        skipped=ctx.skipped or None,
        fallbacks=",".join(ctx.fallbacks) if ctx.fallbacks else None,
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


def _basic_password(token: str) -> str | None:
    try:
        decoded = base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None
