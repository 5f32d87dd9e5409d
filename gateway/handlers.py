"""Thin endpoints. Each decodes, routes, calls the pure translators and the upstream client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import orjson
from aiohttp import web

from .errors import InvalidRequestError
from .keys import ROUTER, SETTINGS, SIGNER, UPSTREAM
from .middleware import CTX_KEY, RequestContext
from .relay import StreamTranslator, relay
from .schemas.anthropic import REQUEST_DECODER, RESPONSE_ENCODER, MessageResponse, MessagesRequest
from .settings import Route
from .translate.common import Signer, message_id
from .translate.from_responses import from_responses
from .translate.stream_responses import ResponsesStreamTranslator
from .translate.to_responses import session_id_from, to_responses, tool_name_map


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one upstream wire dialect is spoken: path, request/response/stream translators."""

    path: str
    to_upstream: Callable[..., dict[str, Any]]
    from_upstream: Callable[..., MessageResponse]
    stream_translator: Callable[..., StreamTranslator]


DIALECTS: Final[dict[str, Dialect]] = {
    "responses": Dialect(
        path="/responses",
        to_upstream=to_responses,
        from_upstream=from_responses,
        stream_translator=ResponsesStreamTranslator,
    ),
}


def _validation_message(exc: msgspec.ValidationError) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.max_tokens`"; lead with the path.
    text = str(exc)
    msg, sep, where = text.rpartition(" - at `")
    if sep:
        return f"{where.rstrip('`')}: {msg}"
    return text


def decode_request(body: bytes) -> MessagesRequest:
    """Decode and validate a Messages request body; InvalidRequestError names the JSON path."""
    if not body:
        raise InvalidRequestError("request body is empty; expected a JSON object")
    try:
        return REQUEST_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(_validation_message(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None


def _thinking_requested(req: MessagesRequest, route: Route) -> bool:
    t = req.thinking
    return route.reasoning and t is not None and t.type in ("enabled", "adaptive")


async def messages(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages`` (and ``/v1/messages/stream``, which always streams)."""
    app = request.app
    ctx: RequestContext = request[CTX_KEY]
    body = await request.read()
    req = decode_request(body)
    ctx.model = req.model
    route = app[ROUTER].resolve(req.model)
    ctx.route = route.name
    stream = req.stream or request.path.endswith("/stream")
    ctx.stream = stream
    dialect = DIALECTS[route.dialect]
    signer: Signer = app[SIGNER]
    session = session_id_from(req, request.headers.get("X-Claude-Code-Session-Id"))
    payload = dialect.to_upstream(req, route, signer, stream=stream, session_id=session)
    names = tool_name_map(req)
    thinking = _thinking_requested(req, route)
    upstream = app[UPSTREAM]
    resp = await upstream.send(route, dialect.path, orjson.dumps(payload), ctx)
    if not stream:
        data = await upstream.read_body(resp)
        message = dialect.from_upstream(
            data,
            model=req.model,
            signer=signer,
            thinking=thinking,
            stop_sequences=req.stop_sequences,
            tool_names=names,
        )
        u = message.usage
        ctx.usage = (
            u.input_tokens,
            u.output_tokens,
            u.cache_read_input_tokens,
            u.cache_creation_input_tokens,
        )
        ctx.stop_reason = message.stop_reason
        return web.Response(body=RESPONSE_ENCODER.encode(message), content_type="application/json")
    translator = dialect.stream_translator(
        model=req.model,
        signer=signer,
        thinking=thinking,
        request_id=ctx.request_id,
        stop_sequences=req.stop_sequences,
        tool_names=names,
        message_id=message_id(),
    )
    settings = app[SETTINGS]
    return await relay(
        request,
        resp,
        translator,
        ctx,
        idle_timeout=settings.timeouts.idle,
        ping_interval=settings.server.ping_interval,
        max_event_bytes=settings.server.max_event_bytes,
    )


_OK: Final = orjson.dumps({"status": "ok"})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=_OK, content_type="application/json")


async def root(request: web.Request) -> web.Response:
    # Claude Code probes `HEAD /` (claude-code.md §2).
    return web.Response(body=_OK, content_type="application/json")


async def event_logging(request: web.Request) -> web.Response:
    """Claude Code's telemetry batch: accepted and dropped, never forwarded or logged."""
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/stream", messages)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", root)  # aiohttp adds HEAD for GET routes
    app.router.add_post("/api/event_logging/batch", event_logging)
