"""Chat Completions upstreams end to end: official SDK → gateway → mock upstream's
``/v1/chat/completions``, over real sockets (issue 6).

The behaviours of the Responses suites, run against the chat dialect by parametrizing one
set of tests (text, tool call, tool round trip with matching ``tool_call_id``s, parallel calls
under each server quirk, streaming == non-streaming, mid-stream error chunk, upstream HTTP
errors), plus a two-route configuration (haiku → chat, everything else → Responses) on the same
mock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import msgspec
import pytest
from aiohttp.test_utils import TestServer

from gateway.mock_upstream import FunctionCall, Reasoning, Refusal, Script, Text
from tests.conftest import UPSTREAM_KEY, UPSTREAM_KEY_ENV, GatewayFactory, Upstream

HAIKU = "claude-haiku-5-5"
SONNET = "claude-sonnet-5-5"
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


def client_for(server: TestServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=str(server.make_url("")), api_key="sk-ant-client", max_retries=0
    )


@pytest.fixture
async def sdk(
    make_gateway: GatewayFactory, upstream: Upstream
) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """A gateway whose only upstream speaks Chat Completions (vLLM-like switches)."""
    server = await make_gateway(
        upstreams={
            "default": {
                "base_url": upstream.url,
                "api_key_env": UPSTREAM_KEY_ENV,
                "dialect": "chat",
                "max_tokens_field": "max_tokens",
                "thinking_field": "reasoning_content",
            }
        },
        routes=[{"match": ["*"], "model": "qwen3", "max_output_tokens": 4096}],
    )
    client = client_for(server)
    yield client
    await client.close()


async def ask(sdk: anthropic.AsyncAnthropic, stream: bool, **kw: Any) -> anthropic.types.Message:
    """One turn, streamed (SDK accumulator) or not: the same Message either way."""
    kw.setdefault("model", HAIKU)
    kw.setdefault("max_tokens", 1000)
    if not stream:
        return await sdk.messages.create(**kw)
    async with sdk.messages.stream(**kw) as s:
        return await s.get_final_message()


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


MODES = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


def sent(upstream: Upstream) -> dict[str, Any]:
    last = upstream.mock.requests[-1]
    assert last.path == "/v1/chat/completions"
    body: dict[str, Any] = last.body
    return body


# ---------------------------------------------------------------------------------------------


@MODES
async def test_text(sdk: anthropic.AsyncAnthropic, upstream: Upstream, stream: bool) -> None:
    msg = await ask(sdk, stream, max_tokens=8000, messages=[user("hello there")])
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "echo: hello there"  # type: ignore[union-attr]
    assert (msg.model, msg.stop_reason, msg.stop_sequence) == (HAIKU, "end_turn", None)
    assert msg.usage.output_tokens > 0 and msg.usage.input_tokens > 0
    body = sent(upstream)
    assert upstream.mock.requests[-1].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert body["model"] == "qwen3"
    assert body["messages"] == [{"role": "user", "content": "hello there"}]
    assert body["max_tokens"] == 4096  # clamped to the route's max_output_tokens
    assert body["stream"] is stream
    assert body.get("stream_options") == ({"include_usage": True} if stream else None)


@MODES
async def test_tool_call(sdk: anthropic.AsyncAnthropic, upstream: Upstream, stream: bool) -> None:
    upstream.mock.enqueue(
        Script(
            items=[Text("Checking."), FunctionCall("get_weather", '{"city": "Paris"}', "call_1")]
        )
    )
    msg = await ask(sdk, stream, tools=[WEATHER], messages=[user("weather in Paris?")])
    assert msg.stop_reason == "tool_use"
    assert [b.model_dump(include={"type", "text", "id", "name", "input"}) for b in msg.content] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    assert sent(upstream)["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]


@MODES
async def test_tool_round_trip_ids_match(
    sdk: anthropic.AsyncAnthropic, upstream: Upstream, stream: bool
) -> None:
    """The mock's default answer: a call for "call tool NAME {json}", then the tool result."""
    question = user('call tool get_weather {"city": "Oslo"}')
    first = await ask(sdk, stream, tools=[WEATHER], messages=[question])
    tool_use = first.content[-1]
    assert tool_use.type == "tool_use" and tool_use.input == {"city": "Oslo"}
    second = await ask(
        sdk,
        stream,
        tools=[WEATHER],
        messages=[
            question,
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in first.content],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "-3C"}],
            },
        ],
    )
    assert second.content[0].text == "tool result: -3C"  # type: ignore[union-attr]
    msgs = sent(upstream)["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool"]
    assert msgs[1]["tool_calls"][0]["id"] == msgs[2]["tool_call_id"] == tool_use.id
    assert msgs[1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Oslo"}',
    }


QUIRKS = {
    "openai": {},
    "no_index": {"chat_no_index": True},
    "zero_index": {"chat_zero_index": True},
    "missing_first_id": {"chat_missing_first_id": True},
    "interleaved": {"chat_interleave": True},
}
ANSWERS = {
    "parallel_calls": lambda: [
        Text("Both:"),
        FunctionCall("get_weather", '{"city": "Paris, France"}', "call_a"),
        FunctionCall("get_weather", '{"city": "Rome"}', "call_b"),
        FunctionCall("get_time", "", "call_c"),
    ],
    "reasoning": lambda: [Reasoning(["Think about it.", "Then answer."]), Text("Sunny.")],
    "refusal": lambda: [Refusal("I can't help with that.")],
}


@pytest.mark.parametrize("quirk", sorted(QUIRKS))
@pytest.mark.parametrize("answer", sorted(ANSWERS))
async def test_streaming_equals_non_streaming(
    sdk: anthropic.AsyncAnthropic, upstream: Upstream, quirk: str, answer: str
) -> None:
    """The same scripted answer, once as JSON and once streamed with the server quirk: the
    SDK's accumulated stream equals the non-streaming Message (protocol.md §10.12)."""
    script = {"usage": {"input_tokens": 90, "cached_tokens": 64, "output_tokens": 21}}
    upstream.mock.enqueue(
        Script(items=ANSWERS[answer](), **script, **QUIRKS[quirk]),
        Script(items=ANSWERS[answer](), **script, **QUIRKS[quirk]),
    )
    kw: dict[str, Any] = {"tools": [WEATHER, TIME], "messages": [user("go")]}
    kw["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    plain = await ask(sdk, False, **kw)
    streamed = await ask(sdk, True, **kw)
    a, b = plain.model_dump(exclude={"id"}), streamed.model_dump(exclude={"id"})
    # usage.service_tier is only in the stream's final message_delta, which the SDK's
    # accumulator does not read for it (message_start cannot know the tier yet)
    assert a["usage"].pop("service_tier") == "standard" and b["usage"].pop("service_tier") is None
    if quirk == "missing_first_id":
        # The stream's calls had no id (the mock's JSON answer keeps them): minted ones.
        for doc in (a, b):
            for block in doc["content"]:
                if block["type"] == "tool_use":
                    assert block["id"].startswith("toolu_" if doc is b else "call_")
                    block["id"] = "minted"
    assert a == b
    if answer == "parallel_calls":
        assert [blk["type"] for blk in a["content"]] == ["text", *["tool_use"] * 3]
        assert [blk["input"] for blk in a["content"][1:]] == [
            {"city": "Paris, France"},
            {"city": "Rome"},
            {},
        ]
        assert a["stop_reason"] == "tool_use"
    elif answer == "reasoning":
        assert a["content"][0] == {
            "type": "thinking",
            "thinking": "Think about it.\n\nThen answer.",
            "signature": "",
        }
    else:
        assert a["stop_reason"] == "refusal"
    assert a["usage"]["cache_read_input_tokens"] == 64 and a["usage"]["input_tokens"] == 26


async def test_thinking_goes_back_under_the_route_field(
    sdk: anthropic.AsyncAnthropic, upstream: Upstream
) -> None:
    upstream.mock.enqueue(Script(items=[Reasoning(["ponder"]), Text("A1")]))
    thinking = {"type": "enabled", "budget_tokens": 1024}
    first = await ask(sdk, True, thinking=thinking, messages=[user("Q1")])
    assert [b.type for b in first.content] == ["thinking", "text"]
    await ask(
        sdk,
        True,
        thinking=thinking,
        messages=[
            user("Q1"),
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in first.content],
            },
            user("Q2"),
        ],
    )
    assert sent(upstream)["messages"][1] == {
        "role": "assistant",
        "content": "A1",
        "reasoning_content": "ponder",
    }
    assert "reasoning_effort" not in sent(upstream)  # the route does not send it


@MODES
async def test_stop_sequence_scanned(
    sdk: anthropic.AsyncAnthropic, upstream: Upstream, stream: bool
) -> None:
    """The mock ignores ``stop`` (like some servers): the gateway cuts and reports it."""
    upstream.mock.enqueue(Script(items=[Text("The answer is 42. END and more")]))
    msg = await ask(sdk, stream, stop_sequences=["END"], messages=[user("x")])
    assert msg.content[0].text == "The answer is 42. "  # type: ignore[union-attr]
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "END")
    assert sent(upstream)["stop"] == ["END"]


async def test_mid_stream_error_chunk(sdk: anthropic.AsyncAnthropic, upstream: Upstream) -> None:
    upstream.mock.enqueue(
        Script(
            items=[Text("partial answer")],
            chat_error_chunk=True,
            error_code="rate_limit_exceeded",
            error_message="Rate limit reached.",
        )
    )
    with pytest.raises(anthropic.APIStatusError) as info:
        await ask(sdk, True, messages=[user("x")])
    assert info.value.body["error"] == {
        "type": "rate_limit_error",
        "message": "Rate limit reached.",
    }  # type: ignore[index]


@pytest.mark.parametrize("end", ["none", "failed"])
async def test_stream_without_finish_is_an_error(
    sdk: anthropic.AsyncAnthropic, upstream: Upstream, end: str
) -> None:
    upstream.mock.enqueue(Script(items=[Text("cut off")], end=end))  # type: ignore[arg-type]
    with pytest.raises(anthropic.APIStatusError) as info:
        await ask(sdk, True, messages=[user("x")])
    assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]


@MODES
@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (503, anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_upstream_http_errors(
    sdk: anthropic.AsyncAnthropic,
    upstream: Upstream,
    stream: bool,
    status: int,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    """Before any byte is sent, an upstream error is a real Anthropic HTTP error (design.md
    item 8), for streaming requests too."""
    upstream.mock.enqueue(Script(status=status))
    with pytest.raises(error_class) as info:
        await ask(sdk, stream, messages=[user("x")])
    assert info.value.body["error"]["type"] == error_type  # type: ignore[index]


async def test_bad_request_is_not_sent(sdk: anthropic.AsyncAnthropic, upstream: Upstream) -> None:
    pdf = {"type": "document", "source": {"type": "url", "url": "https://e.test/a.pdf"}}
    with pytest.raises(anthropic.BadRequestError, match="PDF documents by URL"):
        await ask(sdk, False, messages=[{"role": "user", "content": [pdf]}])
    assert upstream.mock.requests == []


# ---------------------------------------------------------------------------------------------
# Two routes on one gateway: haiku → a local Chat server, everything else → Responses


@pytest.fixture
async def two_routes(
    make_gateway: GatewayFactory, upstream: Upstream
) -> AsyncIterator[anthropic.AsyncAnthropic]:
    server = await make_gateway(
        upstreams={"local": {"base_url": upstream.url, "api_key_env": "", "dialect": "chat"}},
        routes=[
            {"match": ["*haiku*"], "model": "small", "upstream": "local"},
            {"match": ["*"], "model": "big"},
        ],
    )
    client = client_for(server)
    yield client
    await client.close()


@MODES
async def test_two_routes(
    two_routes: anthropic.AsyncAnthropic, upstream: Upstream, stream: bool
) -> None:
    small = await ask(two_routes, stream, model=HAIKU, messages=[user("small one")])
    big = await ask(two_routes, stream, model=SONNET, messages=[user("big one")])
    assert small.content[0].text == "echo: small one"  # type: ignore[union-attr]
    assert big.content[0].text == "echo: big one"  # type: ignore[union-attr]
    assert (small.model, big.model) == (HAIKU, SONNET)
    chat, responses = upstream.mock.requests
    assert (chat.path, chat.body["model"]) == ("/v1/chat/completions", "gpt-5-mini")
    assert "Authorization" not in chat.headers  # api_key_env = "": a keyless local server
    assert (responses.path, responses.body["model"]) == ("/v1/responses", "gpt-5")
    assert responses.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"


async def test_two_routes_tool_round_trip_across_dialects(
    two_routes: anthropic.AsyncAnthropic, upstream: Upstream
) -> None:
    """A tool call made by the chat route is answered through the Responses route: the ids
    pair up on both wires."""
    question = user('call tool get_weather {"city": "Lima"}')
    first = await ask(two_routes, True, model=HAIKU, tools=[WEATHER], messages=[question])
    call = first.content[-1]
    assert call.type == "tool_use"
    history = [
        question,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "20C"}],
        },
    ]
    answer = await ask(two_routes, True, model=SONNET, tools=[WEATHER], messages=history)
    assert answer.content[0].text == "tool result: 20C"  # type: ignore[union-attr]
    items = upstream.mock.requests[-1].body["input"]
    assert [i.get("type") for i in items[1:]] == ["function_call", "function_call_output"]
    assert items[1]["call_id"] == items[2]["call_id"] == call.id
    assert msgspec.json.decode(items[1]["arguments"]) == {"city": "Lima"}
