"""Taking a request in: its body within its time and size bounds, then decoded and checked.

``receive`` reads the body (413, 408, a cap on JSON values, issue 10) and only then takes an
in-flight slot; ``decode_request`` validates it with msgspec, and errors name the JSON path."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import msgspec
import orjson
from aiohttp import StreamReader, web

from .anthropic.unknown_blocks import is_unknown_block_error, tolerate_unknown_blocks
from .context import RequestContext
from .errors import (
    InvalidRequestError,
    RequestTimeoutError,
    RequestTooLargeError,
    split_validation_error,
)
from .keys import IN_FLIGHT, LIFECYCLE, SETTINGS
from .logs import log_event
from .schemas.anthropic import REQUEST_DECODER


def _validation_message(exc: msgspec.ValidationError) -> str:
    # Lead with the path, as Anthropic's own messages do.
    msg, path = split_validation_error(str(exc))
    return msg if path is None else f"{path}: {msg}"


def decode_request(body: bytes, decoder: msgspec.json.Decoder[Any] = REQUEST_DECODER) -> Any:
    """Decode and validate a request body; InvalidRequestError names the JSON path."""
    if not body:
        raise InvalidRequestError("request body is empty; expected a JSON object")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        if is_unknown_block_error(exc):
            return _decode_tolerant(body, decoder)
        raise InvalidRequestError(_validation_message(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidRequestError("request body is not valid UTF-8") from None
    except RecursionError:
        raise InvalidRequestError("request JSON is nested too deeply") from None


def _decode_tolerant(body: bytes, decoder: msgspec.json.Decoder[Any]) -> Any:
    """The slow path for a history holding block types the gateway does not know: those are
    rewritten (text kept, the rest dropped, a debug line names their types) and the body is
    decoded again; any other fault is still a 400."""
    try:
        doc = orjson.loads(body)
        dropped = tolerate_unknown_blocks(doc)
        result = decoder.decode(orjson.dumps(doc))
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(_validation_message(exc)) from None
    except (orjson.JSONDecodeError, TypeError, RecursionError):
        raise InvalidRequestError("request JSON could not be decoded") from None
    kinds = ",".join(f"{k}×{n}" for k, n in Counter(dropped).items())
    log_event("unknown_blocks_rewritten", logging.DEBUG, ignored=kinds, count=len(dropped))
    return result


def check_json_values(body: bytes, limit: int) -> None:
    """Refuse a body that would decode into more than ``limit`` JSON values (issue 10 item 11).

    Decoding costs ~75 bytes and ~0.1 µs of event-loop time per value whatever the body's size
    (1.24 M tiny blocks in 32 MB took 480 MB and 0.7 s), so the bound is on values, counted
    before decoding: every value but a container's first is preceded by a ``,``, and every
    container opens with ``{`` or ``[``. Those bytes inside strings count too, so this is an
    upper bound; a body shorter than the limit cannot pass it and is not scanned.
    """
    if len(body) <= limit:
        return
    n = body.count(b",")  # one pass each, and a hostile body fails on the first
    if n <= limit:
        n += body.count(b"{")
        if n <= limit:
            n += body.count(b"[")
            if n <= limit:
                return
    raise InvalidRequestError(
        f"request body holds more JSON values than the {limit} the gateway decodes per "
        "request (server.max_json_values)"
    )


async def _read_all(content: StreamReader, limit: int) -> bytes:
    if content.is_eof():  # all of it arrived already: taken at once, no async loop (issue 19)
        chunks = [content.read_nowait()]
        size = len(chunks[0])
    else:
        chunks = []
        size = 0
        async for chunk in content.iter_any():
            size += len(chunk)
            if size > limit:
                break
            chunks.append(chunk)
    if size > limit:
        raise RequestTooLargeError(f"request body exceeds {limit} bytes")
    return b"".join(chunks)


async def receive(
    request: web.Request,
    ctx: RequestContext,
    *,
    limit: int | None = None,
    max_values: int | None = None,
) -> bytes:
    """The whole request body within ``timeouts.client_body``, then an in-flight slot.

    413 beyond ``max_body_bytes``, 408 when the body takes too long to arrive, 400 when it
    holds more JSON values than ``max_json_values`` (``limit`` and ``max_values`` replace the two
    for endpoints with their own, the batch API's); only then is a slot taken (529 when none is
    free), so bodies still arriving never hold one (issue 10 item 3). Unlike
    ``request.read()`` this keeps no copy on the request object, so the handler can let go of
    a large body once it is decoded.
    """
    app = request.app
    settings = app[SETTINGS]
    life = app[LIFECYCLE]
    if life.stopping:
        ctx.outcome = "shutdown"
        raise life.shutting_down()
    if limit is None:
        limit = settings.server.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise RequestTooLargeError(f"request body of {length} bytes exceeds {limit} bytes")
    content = request.content
    if content.is_eof():  # all of it arrived already: nothing to wait for
        body = await _read_all(content, limit)
    else:
        wait = settings.timeouts.client_body
        try:
            async with life.wait(asyncio.get_running_loop().time() + wait):
                body = await _read_all(content, limit)
        except TimeoutError:
            if life.stopping:
                ctx.outcome = "shutdown"
                raise life.shutting_down() from None
            raise RequestTimeoutError(f"request body not received within {wait:g}s") from None
    check_json_values(body, max_values or settings.server.max_json_values)
    app[IN_FLIGHT].admit(ctx)
    return body
