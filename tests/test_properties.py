"""Property tests and bounded fuzzing (issue 5).

* Random and mutated Anthropic request bodies never make our code fail: decoding plus
  translation either succeeds or raises InvalidRequestError; over HTTP every answer is a valid
  Message or a valid Anthropic error, never a 5xx from our own code.
* Random upstream event streams (valid event types with hostile fields, random bytes) never
  make the SSE decoder or the stream translator raise, and what comes out obeys the Anthropic
  event grammar.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import msgspec
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.anthropic.signatures import Signer
from gateway.app import create_app
from gateway.dialects.responses.stream import ResponsesStreamTranslator
from gateway.encoding import encode_json
from gateway.errors import InvalidRequestError
from gateway.handlers import DIALECTS, translate_request
from gateway.intake import decode_request
from gateway.mock_upstream import start_mock
from gateway.schemas.anthropic_out import MessageResponse
from gateway.settings import Route
from gateway.sse import SSEDecoder, SSEError
from gateway.sse_out import encode_frame
from tests.anthropic_grammar import check_stream, parse_frames
from tests.conftest import UPSTREAM_KEY_ENV, make_settings
from tests.fixtures.claude_code import claude_code_request

SIGNER = Signer(b"p" * 32)
ROUTES = [
    Route(
        name="r1",
        dialect="responses",
        base_url="http://x",
        api_key=None,
        headers={},
        upstream_model="gpt-5",
    ),
    Route(
        name="r2",
        dialect="responses",
        base_url="http://x",
        api_key=None,
        headers={},
        upstream_model="m",
        max_output_tokens=1000,
        reasoning=False,
        sampling=True,
    ),
]

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_any = st.recursive(
    json_leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)

BLOCK_TYPES = [
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "search_result",
    "tool_reference",
    "server_tool_use",
    "web_search_tool_result",
    "bogus",
]
SOURCE_TYPES = ["base64", "url", "text", "content", "file", "zip"]


@st.composite
def blocks(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(BLOCK_TYPES))
    block: dict[str, Any] = {"type": kind}
    fields = {
        "text": st.text(max_size=30),
        "thinking": st.text(max_size=10),
        "signature": st.one_of(
            st.just(""), st.text(max_size=10), st.just(SIGNER.encode("rs_1", "e"))
        ),
        "id": st.text(min_size=0, max_size=80),
        "name": st.text(max_size=70),
        "tool_use_id": st.text(max_size=80),
        "input": json_any,
        "is_error": st.one_of(st.booleans(), st.none()),
        "content": st.one_of(
            st.text(max_size=10), st.lists(st.deferred(blocks), max_size=3), json_any
        ),
        "source": st.fixed_dictionaries(
            {"type": st.sampled_from(SOURCE_TYPES)},
            optional={
                "media_type": st.sampled_from(["image/png", "application/pdf", "text/plain", "x"]),
                "data": st.text(max_size=10),
                "url": st.text(max_size=10),
                "content": st.one_of(
                    st.text(max_size=5), st.lists(st.deferred(blocks), max_size=2)
                ),
            },
        ),
        "title": st.one_of(st.none(), st.text(max_size=5)),
        "data": st.text(max_size=10),
        "tool_name": st.text(max_size=10),
    }
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=5, unique=True)):
        block[name] = draw(fields[name])
    return block


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    messages = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "assistant", "system", "tool"]),
                    "content": st.one_of(st.text(max_size=20), st.lists(blocks(), max_size=4)),
                },
                optional={"output_config": st.fixed_dictionaries({"effort": st.text(max_size=6)})},
            ),
            max_size=5,
        )
    )
    req: dict[str, Any] = {"model": draw(st.text(max_size=12)), "messages": messages}
    optional = {
        "max_tokens": st.integers(min_value=-5, max_value=10**7),
        "system": st.one_of(st.text(max_size=10), st.lists(blocks(), max_size=2)),
        "tools": st.lists(
            st.fixed_dictionaries(
                {"name": st.text(max_size=70)},
                optional={
                    "input_schema": json_any,
                    "type": st.sampled_from(["custom", "web_search_20250305", "x"]),
                    "description": st.text(max_size=5),
                },
            ),
            max_size=3,
        ),
        "tool_choice": st.fixed_dictionaries(
            {"type": st.sampled_from(["auto", "any", "tool", "none", "x"])},
            optional={"name": st.text(max_size=5), "disable_parallel_tool_use": st.booleans()},
        ),
        "thinking": st.fixed_dictionaries(
            {"type": st.sampled_from(["enabled", "disabled", "adaptive", "between_tools", "x"])},
            optional={"budget_tokens": st.integers(-5, 10**6), "display": st.text(max_size=8)},
        ),
        "output_config": st.fixed_dictionaries(
            {},
            optional={
                "effort": st.text(max_size=6),
                "format": st.fixed_dictionaries(
                    {"type": st.text(max_size=12)}, optional={"schema": json_any}
                ),
            },
        ),
        "stop_sequences": st.lists(st.text(max_size=5), max_size=3),
        "temperature": st.floats(allow_nan=False),
        "top_p": st.floats(allow_nan=False),
        "metadata": st.fixed_dictionaries(
            {}, optional={"user_id": st.one_of(st.none(), st.text(max_size=30))}
        ),
        "service_tier": st.text(max_size=12),
        "stream": st.booleans(),
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), unique=True)):
        req[name] = draw(optional[name])
    return req


def run_pipeline(body: bytes) -> None:
    """Decode + translate + encode; only InvalidRequestError may escape."""
    try:
        req = decode_request(body)
        for route in ROUTES:
            payload = translate_request(
                DIALECTS["responses"], req, route, SIGNER, stream=req.stream
            )
            encode_json(payload)
    except InvalidRequestError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_random_requests_never_crash(req: dict[str, Any]) -> None:
    run_pipeline(msgspec.json.encode(req))


BASE = claude_code_request(turns=3, tools=5, system_kb=1, thinking_blocks=True)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


BASE_PATHS = _paths(BASE)[1:]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(BASE_PATHS), json_any), min_size=1, max_size=4))
def test_mutated_claude_code_requests_never_crash(mutations: list[tuple[Any, Any]]) -> None:
    doc = copy.deepcopy(BASE)
    for path, value in mutations:
        node: Any = doc
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    run_pipeline(msgspec.json.encode(doc))


# ---------------------------------------------------------------------------------------------
# Upstream side: decoder + stream translator fuzzing

EVENT_TYPES = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_text.delta",
    "response.output_text.done",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.reasoning_summary_part.added",
    "response.reasoning_summary_text.delta",
    "response.reasoning_text.delta",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
    "response.queued",
    "response.unknown_thing",
]
ITEM = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call", "reasoning", "web_search_call", "x"])},
    optional={
        "id": st.sampled_from(["msg_1", "fc_1", "fc_2", "rs_1"]),
        "call_id": st.one_of(st.none(), st.text(max_size=70)),
        "name": st.one_of(st.none(), st.text(max_size=10)),
        "arguments": st.one_of(st.text(max_size=20), st.just('{"a": 1}'), json_any),
        "summary": st.one_of(json_any, st.just([{"type": "summary_text", "text": "s"}])),
        "encrypted_content": st.one_of(st.none(), st.text(max_size=10)),
        "content": json_any,
        "status": st.sampled_from(["completed", "incomplete", "in_progress"]),
    },
)
EVENT = st.fixed_dictionaries(
    {"type": st.sampled_from(EVENT_TYPES)},
    optional={
        "output_index": st.one_of(st.integers(-2, 5), json_any),
        "item_id": st.sampled_from(["msg_1", "fc_1", "fc_2", "rs_1", ""]),
        "content_index": st.integers(0, 2),
        "summary_index": st.integers(0, 2),
        "delta": st.one_of(st.text(max_size=15), json_any),
        "arguments": st.one_of(st.text(max_size=15), json_any),
        "item": st.one_of(ITEM, json_any),
        "response": st.one_of(
            json_any,
            st.fixed_dictionaries(
                {"status": st.sampled_from(["completed", "incomplete", "failed"])},
                optional={
                    "usage": json_any,
                    "output": st.lists(ITEM, max_size=3),
                    "incomplete_details": json_any,
                    "error": json_any,
                },
            ),
        ),
        "code": st.one_of(st.none(), st.text(max_size=10)),
        "message": st.one_of(st.none(), st.text(max_size=10)),
        "error": json_any,
    },
)


def _check_translation(raw: bytes, chunks: list[int], stops: list[str]) -> None:
    translator = ResponsesStreamTranslator(
        model="claude-x", signer=SIGNER, thinking=True, request_id="req_1", stop_sequences=stops
    )
    decoder = SSEDecoder(max_event_bytes=1 << 16)
    out: list[bytes] = []
    pos = 0
    try:
        for size in [*chunks, len(raw)]:
            piece, pos = raw[pos : pos + size], pos + size
            for event in decoder.feed(piece):
                if not translator.done:
                    out += translator.feed(event)
        for event in decoder.finish():
            if not translator.done:
                out += translator.feed(event)
        out += translator.finish()
    except SSEError:
        from gateway.errors import APIError

        out += translator.fail(APIError("bad stream"))
    events = parse_frames(b"".join(out))
    check_stream(events)
    assert events, "a stream always says something"
    assert events[-1][0] in ("message_stop", "error")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(EVENT, max_size=12),
    st.lists(st.integers(1, 40), max_size=6),
    st.lists(st.text(min_size=1, max_size=3), max_size=2),
)
def test_fuzz_stream_translator_events(
    events: list[Any], chunks: list[int], stops: list[str]
) -> None:
    raw = b"".join(encode_frame(str(e["type"]).encode(), msgspec.json.encode(e)) for e in events)
    _check_translation(raw, chunks, stops)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(1, 50), max_size=5))
def test_fuzz_decoder_and_translator_random_bytes(raw: bytes, chunks: list[int]) -> None:
    _check_translation(raw, chunks, [])


# ---------------------------------------------------------------------------------------------
# Over HTTP: a live gateway in a background thread, random bodies in, only valid answers out


@pytest.fixture(scope="module")
def live_gateway() -> Iterator[str]:
    """A gateway (and its mock upstream) served from a background event loop thread."""
    loop = asyncio.new_event_loop()
    ready: concurrent.futures.Future[tuple[str, list[web.AppRunner]]] = concurrent.futures.Future()

    async def start() -> None:
        mock_runner, url = await start_mock("127.0.0.1", 0)
        settings = make_settings(url)
        app = create_app(settings, env={UPSTREAM_KEY_ENV: "sk-x"}, signing_key=b"p" * 32)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        ready.set_result((f"http://127.0.0.1:{port}", [runner, mock_runner]))

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    base, runners = ready.result()
    try:
        yield base
    finally:
        for runner in runners:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


def _post(base: str, body: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(
        base + "/v1/messages", data=body, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            ctype = r.headers.get("content-type", "")
            status = r.status
    except urllib.error.HTTPError as exc:
        raw, ctype, status = exc.read(), exc.headers.get("content-type", ""), exc.code
    if ctype.startswith("text/event-stream"):
        events = parse_frames(raw)
        check_stream(events)
        return status, events
    return status, orjson.loads(raw)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_http_answers_are_messages_or_anthropic_errors(
    live_gateway: str, req: dict[str, Any]
) -> None:
    status, doc = _post(live_gateway, msgspec.json.encode(req))
    assert status < 500 or (status == 529 and doc["error"]["type"] == "overloaded_error")
    if isinstance(doc, list):
        assert status == 200
        return
    if status == 200:
        msgspec.convert(doc, MessageResponse)
    else:
        assert doc["type"] == "error"
        assert doc["error"]["type"] in {
            "invalid_request_error",
            "not_found_error",
            "request_too_large",
        }
        assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]
