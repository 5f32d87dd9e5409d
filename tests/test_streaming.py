"""Streaming end to end: official SDK / raw HTTP → gateway → mock upstream (Responses stream)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from gateway.keys import UPSTREAM
from gateway.mock_upstream import FunctionCall, Reasoning, Refusal, Script, Text
from tests.anthropic_grammar import check_stream, parse_frames
from tests.conftest import GatewayFactory, Upstream

MODEL = "claude-sonnet-5-5"
TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TOOL2 = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


def body(stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 200,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [TOOL, TOOL2],
        **extra,
    }


async def raw_stream(
    gateway: TestServer, payload: dict[str, Any], path: str = "/v1/messages"
) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as s, s.post(gateway.make_url(path), json=payload) as r:
        return r.status, CIMultiDict(r.headers), await r.read()


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [e for e, _ in events]


SCRIPTS = {
    "text": lambda: Script(items=[Text("Hello, world. How are you?")]),
    "tool": lambda: Script(
        items=[FunctionCall("get_weather", '{"city": "Paris"}', call_id="call_1")]
    ),
    "text_then_tools": lambda: Script(
        items=[
            Text("Let me check."),
            FunctionCall("get_weather", '{"city": "Paris"}', call_id="call_1"),
            FunctionCall("get_time", "", call_id="call_2"),
        ]
    ),
    "interleaved_tools": lambda: Script(
        items=[
            FunctionCall("get_weather", '{"city": "Paris, France"}', call_id="call_a"),
            FunctionCall("get_weather", '{"city": "Rome, Italy"}', call_id="call_b"),
        ],
        responses_interleave=True,
    ),
    "args_only_in_done": lambda: Script(
        items=[FunctionCall("get_weather", '{"city": "Oslo"}', call_id="call_1", chunks=[])]
    ),
    "refusal": lambda: Script(items=[Refusal("I can't help with that.")]),
    "incomplete": lambda: Script(items=[Text("cut off mid")], end="incomplete"),
    "split_crlf": lambda: Script(items=[Text("Ünïcödé ✓ text 🎉 here")], split=3, crlf=True),
}


@pytest.mark.parametrize("case", sorted(SCRIPTS))
async def test_sdk_stream_equals_non_stream(
    sdk: anthropic.AsyncAnthropic, upstream: Upstream, case: str
) -> None:
    upstream.mock.enqueue(SCRIPTS[case]())
    async with sdk.messages.stream(**{k: v for k, v in body(False).items() if k != "stream"}) as s:
        streamed = await s.get_final_message()
    upstream.mock.enqueue(SCRIPTS[case]())
    plain = await sdk.messages.create(**body(False))
    a = streamed.model_dump(exclude={"id"})
    b = plain.model_dump(exclude={"id"})
    assert a["content"] == b["content"]
    assert a["stop_reason"] == b["stop_reason"]
    assert a["usage"]["output_tokens"] == b["usage"]["output_tokens"]
    assert a["model"] == b["model"] == MODEL
    assert upstream.mock.requests[-2].body["stream"] is True
    assert upstream.mock.requests[-1].body["stream"] is False


async def test_exact_text_event_sequence_and_headers(
    gateway: TestServer, upstream: Upstream
) -> None:
    upstream.mock.enqueue(Script(items=[Text("Hi there", chunks=["Hi", " there"])]))
    status, headers, raw = await raw_stream(gateway, body(), "/v1/messages?beta=true")
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Accel-Buffering"] == "no"
    assert headers["request-id"].startswith("req_")
    assert headers["X-Correlation-ID"]
    events = parse_frames(raw)
    check_stream(events)
    assert names(events) == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["model"] == MODEL and start["stop_reason"] is None
    assert set(start["usage"]) >= {"input_tokens", "output_tokens"}
    assert [e[1]["delta"]["text"] for e in events if e[0] == "content_block_delta"] == [
        "Hi",
        " there",
    ]
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 0
    assert raw.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


async def test_stream_alias_streams_regardless_of_flag(
    gateway: TestServer, upstream: Upstream
) -> None:
    status, headers, raw = await raw_stream(gateway, body(stream=False), "/v1/messages/stream")
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    check_stream(parse_frames(raw))
    assert upstream.mock.requests[-1].body["stream"] is True


async def test_thinking_stream_signature_before_stop(
    gateway: TestServer, upstream: Upstream
) -> None:
    upstream.mock.enqueue(Script(items=[Reasoning(["Need weather."]), Text("Sunny.")]))
    payload = body(thinking={"type": "enabled", "budget_tokens": 2048})
    status, _, raw = await raw_stream(gateway, payload)
    assert status == 200
    events = parse_frames(raw)
    check_stream(events)
    blocks = [e[1]["content_block"]["type"] for e in events if e[0] == "content_block_start"]
    assert blocks == ["thinking", "text"]
    deltas = [
        e[1]["delta"]["type"]
        for e in events
        if e[0] == "content_block_delta" and e[1]["index"] == 0
    ]
    assert deltas[-1] == "signature_delta"
    assert deltas[:-1] == ["thinking_delta"] * (len(deltas) - 1)


@pytest.mark.parametrize(
    ("script", "etype"),
    [
        (Script(items=[Text("partial")], end="failed"), "api_error"),
        (Script(items=[Text("partial")], end="error_event"), None),
        (Script(items=[Text("partial")], end="none"), "api_error"),
        (
            Script(
                raw_body=b'event: response.created\ndata: {"type":"response.created","resp',
                content_type="text/event-stream",
            ),
            "api_error",
        ),
    ],
)
async def test_mid_stream_failures_end_with_one_error_event(
    gateway: TestServer, upstream: Upstream, script: Script, etype: str | None
) -> None:
    upstream.mock.enqueue(script)
    status, _, raw = await raw_stream(gateway, body())
    assert status == 200
    events = parse_frames(raw)
    check_stream(events)
    assert events[-1][0] == "error"
    assert "message_stop" not in names(events)
    assert names(events).count("error") == 1
    err = events[-1][1]
    assert err["type"] == "error"
    assert err["request_id"].startswith("req_")
    if etype:
        assert err["error"]["type"] == etype


async def test_sdk_raises_on_mid_stream_error(
    sdk: anthropic.AsyncAnthropic, upstream: Upstream
) -> None:
    upstream.mock.enqueue(Script(items=[Text("partial")], end="failed"))
    with pytest.raises(anthropic.APIStatusError) as info:
        async with sdk.messages.stream(**{k: v for k, v in body().items() if k != "stream"}) as s:
            await s.get_final_message()
    assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]


async def test_upstream_http_error_before_stream_is_json(
    gateway: TestServer, upstream: Upstream
) -> None:
    upstream.mock.enqueue(
        Script(status=429, error_code="rate_limit_exceeded", headers={"retry-after": "2"})
    )
    status, headers, raw = await raw_stream(gateway, body())
    assert status == 429
    assert headers["Content-Type"].startswith("application/json")
    assert headers["retry-after"] == "2"
    assert orjson.loads(raw)["error"]["type"] == "rate_limit_error"


async def test_idle_upstream_times_out_with_error_event(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(timeouts={"idle": 0.3})
    upstream.mock.enqueue(Script(items=[Text("one two three four five")], stall_after_events=4))
    t0 = time.monotonic()
    status, _, raw = await raw_stream(gw, body())
    elapsed = time.monotonic() - t0
    assert status == 200
    events = parse_frames(raw)
    check_stream(events)
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "timeout_error"
    assert 0.3 <= elapsed < 2.0


async def test_pings_during_upstream_silence(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(server={"ping_interval": 0.1})
    upstream.mock.enqueue(Script(items=[Text("a b")], delay_between_events=0.35))
    status, _, raw = await raw_stream(gw, body())
    assert status == 200
    events = parse_frames(raw)
    check_stream(events)
    assert names(events).count("ping") >= 4
    assert names(events)[-1] == "message_stop"


async def test_client_disconnect_closes_upstream(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(Script(items=[Text("one two three four five six")], stall_after_events=5))
    async with aiohttp.ClientSession() as s:
        resp = await s.post(gateway.make_url("/v1/messages"), json=body())
        assert resp.status == 200
        first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b"event: message_start")
        for _ in range(50):
            if upstream.mock.open_streams() == 1:
                break
            await asyncio.sleep(0.01)
        assert upstream.mock.open_streams() == 1
        resp.close()  # the client goes away mid-stream
    t0 = time.monotonic()
    for _ in range(200):  # poll the mock's own count; it has no event to wait on
        if not upstream.mock.open_streams():
            break
        await asyncio.sleep(0.01)
    assert upstream.mock.open_streams() == 0
    assert upstream.mock.closed_streams == 1
    assert time.monotonic() - t0 < 0.5
    connector = gateway.app[UPSTREAM].session.connector
    assert connector is not None
    assert len(connector._acquired) == 0  # nothing left checked out of the pool
    # the gateway still serves the next request
    status, _, raw = await raw_stream(gateway, body())
    assert status == 200 and parse_frames(raw)[-1][0] == "message_stop"


STOP_TEXT = Text(
    "Hello world. STOP here and more text after it",
    chunks=["Hello wor", "ld. ST", "OP here", " and more", " text after", " it"],
)


async def test_stop_sequence_streamed_cuts_and_ends_upstream(
    gateway: TestServer, upstream: Upstream
) -> None:
    upstream.mock.enqueue(Script(items=[STOP_TEXT], delay_between_events=0.05))
    status, _, raw = await raw_stream(gateway, body(stop_sequences=["STOP", "never"]))
    assert status == 200
    events = parse_frames(raw)
    check_stream(events)
    deltas = [e[1]["delta"]["text"] for e in events if e[0] == "content_block_delta"]
    assert "".join(deltas) == "Hello world. "
    assert all("S" not in d for d in deltas)  # no partial "ST" leaked before the match
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "STOP"}
    # the gateway hung up on the upstream instead of reading the rest of the answer
    for _ in range(100):
        if upstream.mock.closed_streams:
            break
        await asyncio.sleep(0.01)
    assert upstream.mock.closed_streams == 1
    assert "stop" not in upstream.mock.requests[-1].body  # Responses has no `stop`


async def test_stop_sequence_non_streamed(
    sdk: anthropic.AsyncAnthropic, upstream: Upstream
) -> None:
    upstream.mock.enqueue(Script(items=[STOP_TEXT]))
    msg = await sdk.messages.create(**body(False, stop_sequences=["STOP"]))
    assert msg.content[0].text == "Hello world. "  # type: ignore[union-attr]
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "STOP")


@pytest.mark.parametrize("code", ["bio_policy", "misalignment_policy_violation"])
async def test_policy_failure_ends_as_refusal(
    sdk: anthropic.AsyncAnthropic, upstream: Upstream, code: str
) -> None:
    # protocol.md §9.11: a policy stop is the model declining, not an error to retry
    upstream.mock.enqueue(Script(items=[Text("I started")], end="failed", error_code=code))
    async with sdk.messages.stream(**{k: v for k, v in body().items() if k != "stream"}) as s:
        streamed = await s.get_final_message()
    upstream.mock.enqueue(Script(items=[Text("I started")], end="failed", error_code=code))
    plain = await sdk.messages.create(**body(False))
    for msg in (streamed, plain):
        assert msg.stop_reason == "refusal"
        assert [b.model_dump() for b in msg.content] == [
            {"type": "text", "text": "I started", "citations": None}
        ]
