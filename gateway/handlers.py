"""Thin endpoints. Each decodes, routes, calls the pure translators and the upstream client."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Final

import msgspec
import orjson
from aiohttp import web

from .anthropic.context_edits import apply_edits, edit_plan, rough_count
from .anthropic.frames import message_frames
from .anthropic.ids import message_id
from .anthropic.plan import AnswerPlan, prepare
from .anthropic.prewarm import prewarm_answer
from .anthropic.request import session_id_from
from .anthropic.server_tools import hosted_tools, unhosted_answer
from .anthropic.signatures import Signer
from .anthropic.stop_sequences import check_stop_sequences
from .anthropic.tools import check_tools
from .context import CTX_KEY, RequestContext
from .dialects import DIALECTS, Dialect
from .encoding import encode_json
from .errors import (
    GatewayTimeoutError,
    InvalidRequestError,
)
from .failover.chain import Opened, Prepared
from .intake import decode_request, receive
from .keys import (
    ACCOUNTS,
    COUNTER,
    LIFECYCLE,
    METRICS,
    RESILIENCE,
    ROUTER,
    SAFEGUARDS,
    SETTINGS,
    SHARED,
    SIGNER,
)
from .logs import log_event
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .relay import relay
from .schemas.anthropic import COUNT_TOKENS_DECODER, MessagesRequest
from .schemas.anthropic_out import RESPONSE_ENCODER, MessageResponse
from .settings import Route


def translate_request(
    dialect: Dialect, req: MessagesRequest, route: Route, signer: Signer, **kw: Any
) -> dict[str, Any]:
    """Run the pure request translator; deep nesting in client JSON is a 400, not a 500."""
    try:
        return dialect.to_upstream(req, route, signer, **kw)
    except RecursionError:
        raise InvalidRequestError("request JSON is nested too deeply") from None


async def messages(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages`` (and ``/v1/messages/stream``, which always streams)."""
    app = request.app
    ctx: RequestContext = request[CTX_KEY]
    raw = await receive(request, ctx)
    req: MessagesRequest = decode_request(raw)
    check_tools(req.tools)
    check_stop_sequences(req.stop_sequences)
    edit_plan(req)  # the API's 400s for malformed edits come before routing
    ctx.model = req.model
    route = app[ROUTER].resolve(req.model)
    ctx.route = route.name
    stream = req.stream or request.path.endswith("/stream")
    ctx.stream = stream
    # the named key's limits (issue 17): the estimate is the body's size / 4, until the
    # answer's usage replaces it
    await app[ACCOUNTS].admit(ctx, req.model, len(raw) // 4)
    # Claude Code's auto mode: the answer's tool calls get verdicts (never sent upstream)
    guard = app[SAFEGUARDS].case(req, route) if req.safeguards else None
    signer: Signer = app[SIGNER]
    original = req
    req, plan = prepare(raw, req, route, signer.for_family(route.upstream))
    if req.max_tokens == 0:
        # a cache pre-warm: nothing is generated; the answer carries the input count
        n = await _count_input(request, req, route, ctx)
        return _answer_without_upstream(prewarm_answer(req, n), stream, ctx, plan)
    if not route.hosted_tools and hosted_tools(req):
        # Server tools this route cannot host: they report themselves unavailable (a 400 when
        # the request offers tools of its own too), never an answer made up without them.
        answer = unhosted_answer(req, route.name, signer)
        return _answer_without_upstream(answer, stream, ctx, plan)
    if plan.blocked_domains:  # OpenAI has no such filter: the gateway removes them
        log_event("search_blocked_domains", count=len(plan.blocked_domains))
    session = session_id_from(req, request.headers.get("X-Claude-Code-Session-Id"))

    def build(target: Route) -> Prepared:
        """The request for one target of the route's chain (issue 16)."""
        target_req, target_plan = req, plan
        family = signer.for_family(target.upstream)
        if target is not route:  # thinking signed by another upstream is dropped there
            target_req, target_plan = prepare(raw, original, target, family)
            if not target.hosted_tools and hosted_tools(target_req):
                raise InvalidRequestError("it has no hosted tools for the server tools asked")
        dialect = DIALECTS[target.dialect]
        payload = translate_request(
            dialect, target_req, target, family, stream=stream, session_id=session,
            strict=target_plan.strict, long_cache=target_plan.long_cache,
        )  # fmt: skip
        return Prepared(dialect.path, encode_json(payload), (dialect, target_plan, family))

    builder: Callable[[Route], Prepared] = build
    if not route.fallbacks:
        # A Claude Code request decodes to several hundred KB of objects; only the encoded
        # payload is needed while the upstream works (keeps RSS low with many in flight).
        only = build(route)
        del req, original, raw, build
        builder = lambda _target: only  # noqa: E731

    settings = app[SETTINGS]
    total = settings.timeouts.total
    deadline = asyncio.get_running_loop().time() + total if total else None
    life = app[LIFECYCLE]
    waited = time.perf_counter()
    try:
        async with life.wait(deadline):
            opened = await app[RESILIENCE].open(route, builder, ctx, stream=stream)
    except TimeoutError:
        if life.stopping:
            ctx.outcome = "shutdown"
            raise life.shutting_down() from None
        raise GatewayTimeoutError(f"request exceeded the gateway's {total:g}s cap") from None
    del builder
    ctx.upstream_ms = round((time.perf_counter() - waited) * 1000.0, 3)
    try:
        return await _answer(request, opened, ctx, stream, guard, deadline)
    finally:
        opened.release()


async def _answer(
    request: web.Request,
    opened: Opened,
    ctx: RequestContext,
    stream: bool,
    guard: Any,
    deadline: float | None,
) -> web.StreamResponse:
    """The answer of the target that took the request: JSON, or the relayed stream."""
    app = request.app
    dialect, plan, signer = opened.extra
    if opened.data is not None:
        message = dialect.from_upstream(opened.data, signer=signer, **plan.translator_args())
        plan.finish(message)
        if guard is not None:
            message.safeguard_results = await app[SAFEGUARDS].for_message(guard, message, ctx)
        ctx.finish(message.usage, message.stop_reason)
        out = web.Response(body=RESPONSE_ENCODER.encode(message), content_type="application/json")
        out.headers[OVERHEAD_HEADER] = _overhead(ctx)
        return out
    translator = dialect.stream_translator(
        signer=signer,
        request_id=ctx.request_id,
        message_id=message_id(),
        **plan.translator_args(),
    )
    plan.configure(translator)
    settings = app[SETTINGS]
    return await relay(
        request,
        opened.resp,
        translator,
        ctx,
        idle_timeout=settings.timeouts.idle,
        send_timeout=settings.timeouts.client_send,
        ping_interval=settings.server.ping_interval,
        max_event_bytes=settings.server.max_event_bytes,
        deadline=deadline,
        registry=app[LIFECYCLE].streams,
        overhead=lambda: _overhead(ctx),
        safeguard=None if guard is None else partial(app[SAFEGUARDS].results, guard, ctx=ctx),
    )


def _answer_without_upstream(
    message: MessageResponse, stream: bool, ctx: RequestContext, plan: AnswerPlan
) -> web.Response:
    """An answer the gateway makes itself, as JSON or as the stream a client expects."""
    plan.finish(message)
    ctx.finish(message.usage, message.stop_reason)
    if not stream:
        return web.Response(body=RESPONSE_ENCODER.encode(message), content_type="application/json")
    out = web.Response(body=b"".join(message_frames(message)))
    out.headers["Content-Type"] = "text/event-stream; charset=utf-8"
    out.headers["Cache-Control"] = "no-cache"
    return out


async def count_tokens(request: web.Request) -> web.Response:
    """``POST /v1/messages/count_tokens``: counted on the translated Responses payload."""
    ctx: RequestContext = request[CTX_KEY]
    counted = decode_request(await receive(request, ctx), COUNT_TOKENS_DECODER)
    check_tools(counted.tools)
    ctx.model = counted.model
    request.app[ACCOUNTS].check_model(ctx, counted.model)
    route = request.app[ROUTER].resolve(counted.model)
    ctx.route = route.name
    # The count endpoint takes no max_tokens; the translation needs one and ignores it here.
    req = MessagesRequest(**msgspec.structs.asdict(counted), max_tokens=MIN_COUNT_TOKENS)
    edits = edit_plan(req)
    cleared = 0
    if edits is not None:
        req, applied = apply_edits(req, edits, rough_count)
        cleared = sum(e["cleared_input_tokens"] for e in applied)
    n = await _count_input(request, req, route, ctx)
    doc: dict[str, Any] = {"input_tokens": n}
    if edits is not None:  # the count is of the edited prompt, as the API's
        doc["context_management"] = {"original_input_tokens": n + cleared}
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


async def _count_input(
    request: web.Request, req: MessagesRequest, route: Route, ctx: RequestContext
) -> int:
    """The request's input tokens: the upstream's exact count (cached, coalesced) or the
    local estimate, on the translated Responses payload."""
    if req.max_tokens < MIN_COUNT_TOKENS:
        req = msgspec.structs.replace(req, max_tokens=MIN_COUNT_TOKENS)
    payload = translate_request(
        DIALECTS["responses"], req, route, request.app[SIGNER], stream=False
    )
    life = request.app[LIFECYCLE]
    try:
        async with life.wait(None):  # only a shutdown ends this wait
            n = await request.app[COUNTER].count(payload, route, ctx)
    except TimeoutError:
        if life.stopping:
            ctx.outcome = "shutdown"
            raise life.shutting_down() from None
        raise
    return n


MIN_COUNT_TOKENS: Final = 16

_OK: Final = orjson.dumps({"status": "ok"})
OVERHEAD_HEADER: Final = "x-gateway-overhead-ms"


def _overhead(ctx: RequestContext) -> str:
    """The gateway's own time so far (total minus upstream wait), for the header and metrics."""
    ctx.overhead_ms = round(max(0.0, ctx.elapsed_ms() - (ctx.upstream_ms or 0.0)), 3)
    return f"{ctx.overhead_ms:.3f}"


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format."""
    resp = web.Response(body=request.app[METRICS].render())
    resp.headers["Content-Type"] = METRICS_CONTENT_TYPE
    return resp


async def healthz(request: web.Request) -> web.Response:
    """Liveness: 200 while the process runs (draining included). The pid tells which of
    several --workers processes answered; ``mock`` that the answers are fake."""
    app = request.app
    body = orjson.dumps(
        {
            "status": "ok",
            "pid": os.getpid(),
            "mock": app[SETTINGS].mock,
            "draining": app[LIFECYCLE].draining,
        }
    )
    return web.Response(body=body, content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 while serving, 503 from the first moment of a shutdown, so that a load
    balancer stops sending new requests before connections close (issue 11 item 6)."""
    app = request.app
    draining = app[LIFECYCLE].draining
    doc: dict[str, Any] = {
        "status": "draining" if draining else "ready",
        "pid": os.getpid(),
        "mock": app[SETTINGS].mock,
    }
    if RESILIENCE in app:  # each target's circuit, each upstream's keys and load (issue 16)
        doc.update(app[RESILIENCE].status(app[ROUTER].targets()))
    if app[SHARED].configured:  # a fleet's Redis: down means local state, never not ready
        doc["redis"] = app[SHARED].status()
    body = orjson.dumps(doc)
    return web.Response(status=503 if draining else 200, body=body, content_type="application/json")


async def root(request: web.Request) -> web.Response:
    # Claude Code probes `HEAD /` (claude-code.md §2).
    return web.Response(body=_OK, content_type="application/json")


async def event_logging(request: web.Request) -> web.Response:
    """Claude Code's telemetry batch: accepted and dropped, never forwarded or logged."""
    return web.Response(status=204)


def _model_info(model_id: str) -> dict[str, Any]:
    m = _ALIAS_RE.match(model_id)
    name = f"Claude {m.group(1).title()} {m.group(2)}.{m.group(3)}" if m else model_id
    return {
        "type": "model",
        "id": model_id,
        "display_name": name,
        "created_at": "2026-01-01T00:00:00Z",
    }


_ALIAS_RE: Final = re.compile(r"^claude-([a-z]+)-(\d+)-(\d+)$")


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models`` in Anthropic's format: the configured ``claude-*`` aliases."""
    ids = request.app[SETTINGS].models.aliases
    data = [_model_info(i) for i in ids]
    body = {
        "data": data,
        "has_more": False,
        "first_id": ids[0] if ids else None,
        "last_id": ids[-1] if ids else None,
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{id}``: any name a route accepts is a model (unknown ``claude-*``
    names route by tier, so they exist too)."""
    model_id = request.match_info["model_id"]
    request.app[ROUTER].resolve(model_id)  # NotFoundError when nothing routes it
    return web.Response(body=orjson.dumps(_model_info(model_id)), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/stream", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model_id}", get_model)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    # Claude Code 2.1.330 probes HEAD /api/hello on start (issue 11 item 13).
    app.router.add_get("/api/hello", root)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", root)  # aiohttp adds HEAD for GET routes
    app.router.add_post("/api/event_logging/batch", event_logging)
