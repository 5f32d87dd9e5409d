"""POST /v1/messages, non-streaming, end to end: official SDK → gateway → mock upstream."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from gateway import __version__
from gateway.mock_upstream import FunctionCall, Reasoning, Refusal, Script, Text
from tests.conftest import UPSTREAM_KEY, GatewayFactory, Upstream

MODEL = "claude-sonnet-5-5"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


async def post(
    gateway: TestServer, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gateway.make_url("/v1/messages"),
            data=data,
            headers={"content-type": "application/json", **(headers or {})},
        ) as r,
    ):
        raw = await r.read()
        return r.status, CIMultiDict(r.headers), orjson.loads(raw) if raw else None


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


async def test_text_answer(sdk: anthropic.AsyncAnthropic, upstream: Upstream) -> None:
    msg = await sdk.messages.create(model=MODEL, max_tokens=100, messages=[user("hello there")])
    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.model == MODEL
    assert re.fullmatch(r"msg_[0-9A-Za-z]{24}", msg.id)
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "echo: hello there"  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn"
    assert msg.stop_sequence is None
    assert msg.usage.output_tokens > 0
    assert msg.usage.cache_read_input_tokens == 0
    sent = upstream.mock.requests[-1]
    assert sent.path == "/v1/responses"
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    # the gateway names itself and sets every header aiohttp would add (so it adds none)
    assert sent.headers["User-Agent"] == f"messages-gateway/{__version__}"
    assert sent.headers["Accept-Encoding"] == "gzip, deflate"
    assert sorted(sent.headers) == sorted(
        ["Host", "Content-Type", "User-Agent", "Accept", "Accept-Encoding", "Authorization",
         "X-Correlation-ID", "Content-Length"]
    )  # fmt: skip
    assert sent.body["model"] == "gpt-5"
    assert sent.body["store"] is False
    assert sent.body["stream"] is False


async def test_exact_json_and_cached_usage(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(
        Script(
            items=[Text("Hi!")],
            usage={"input_tokens": 1500, "cached_tokens": 1024, "output_tokens": 3},
        )
    )
    status, headers, body = await post(
        gateway, {"model": "claude-haiku-5-5", "max_tokens": 50, "messages": [user("x")]}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert re.fullmatch(r"req_[0-9A-Za-z]{24}", headers["request-id"])
    body["id"] = "msg_X"
    assert body == {
        "id": "msg_X",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-5-5",
        "content": [{"type": "text", "text": "Hi!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 476,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 1024,
            "output_tokens_details": {"thinking_tokens": 0},
            "service_tier": "standard",  # the upstream's "default"
        },
    }
    assert upstream.mock.requests[-1].body["model"] == "gpt-5-mini"


async def test_tool_call_then_tool_result_round_trip(
    sdk: anthropic.AsyncAnthropic, upstream: Upstream
) -> None:
    upstream.mock.enqueue(
        Script(
            items=[
                Text("Checking."),
                FunctionCall("get_weather", '{"city": "Paris"}', call_id="call_AbC123"),
            ]
        )
    )
    first = await sdk.messages.create(
        model=MODEL, max_tokens=200, tools=[WEATHER_TOOL], messages=[user("weather in Paris?")]
    )
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["text", "tool_use"]
    tool_use = first.content[1]
    assert tool_use.type == "tool_use"
    assert tool_use.id == "call_AbC123"
    assert tool_use.name == "get_weather"
    assert tool_use.input == {"city": "Paris"}
    tools_sent = upstream.mock.requests[-1].body["tools"]
    assert tools_sent == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": WEATHER_TOOL["input_schema"],
            "strict": False,
        }
    ]

    second = await sdk.messages.create(
        model=MODEL,
        max_tokens=200,
        tools=[WEATHER_TOOL],
        messages=[
            user("weather in Paris?"),
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool_use.id, "content": "18C sunny"}
                ],
            },
        ],
    )
    assert second.content[0].text == "tool result: 18C sunny"  # type: ignore[union-attr]
    items = upstream.mock.requests[-1].body["input"]
    calls = [i for i in items if i.get("type") == "function_call"]
    outputs = [i for i in items if i.get("type") == "function_call_output"]
    assert calls == [
        {
            "type": "function_call",
            "call_id": "call_AbC123",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        }
    ]
    assert outputs == [
        {"type": "function_call_output", "call_id": "call_AbC123", "output": "18C sunny"}
    ]
    # the assistant's text beside the call is kept, before it
    kinds = [(i.get("type"), i.get("role")) for i in items]
    assert kinds == [
        (None, "user"),
        (None, "assistant"),
        ("function_call", None),
        ("function_call_output", None),
    ]


async def test_refusal_and_max_tokens(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(Script(items=[Refusal("I can't help with that.")]))
    status, _, body = await post(
        gateway, {"model": MODEL, "max_tokens": 50, "messages": [user("x")]}
    )
    assert status == 200
    assert body["stop_reason"] == "refusal"
    assert body["content"] == [{"type": "text", "text": "I can't help with that."}]

    upstream.mock.enqueue(Script(items=[Text("partial answ")], end="incomplete"))
    status, _, body = await post(
        gateway, {"model": MODEL, "max_tokens": 5, "messages": [user("x")]}
    )
    assert (status, body["stop_reason"]) == (200, "max_tokens")
    assert upstream.mock.requests[-1].body["max_output_tokens"] == 16  # clamped up to the minimum


async def test_reasoning_hidden_without_thinking(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(Script(items=[Reasoning(["thought"]), Text("answer")]))
    status, _, body = await post(
        gateway, {"model": MODEL, "max_tokens": 50, "messages": [user("x")]}
    )
    assert status == 200
    assert body["content"] == [{"type": "text", "text": "answer"}]


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b"", "request body is empty"),
        (b"[]", "Expected `object`, got `array`"),
        ({"model": MODEL, "messages": [user("x")]}, "missing required field `max_tokens`"),
        (
            {"model": MODEL, "max_tokens": "many", "messages": [user("x")]},
            "$.max_tokens: Expected `int`, got `str`",
        ),
        (
            {"model": MODEL, "max_tokens": 10, "messages": []},
            "$.messages: Expected `array` of length >= 1",
        ),
        (
            {"model": MODEL, "max_tokens": 10, "messages": [{"role": "bot", "content": "x"}]},
            "$.messages[0].role",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 10,
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "zip"}}]}
                ],
            },
            "$.messages[0].content[0].source.type",
        ),
        (
            {"model": MODEL, "max_tokens": -1, "messages": [user("x")]},
            "$.max_tokens: Expected `int` >= 0",
        ),
    ],
)
async def test_bad_requests_are_400_naming_the_path(
    gateway: TestServer, upstream: Upstream, body: Any, fragment: str
) -> None:
    status, headers, err = await post(gateway, body)
    assert status == 400
    assert err["type"] == "error"
    assert err["error"]["type"] == "invalid_request_error"
    assert fragment in err["error"]["message"]
    assert err["request_id"] == headers["request-id"]
    assert upstream.mock.requests == []


async def test_unknown_fields_and_cache_control_ignored(
    gateway: TestServer, upstream: Upstream
) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 20,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}, "x": 1}
                ],
                "future_field": {"a": 1},
            }
        ],
        "cache_control": {"type": "ephemeral"},
        "context_management": {"edits": []},
        "brand_new_param": [1, 2, 3],
    }
    status, _, out = await post(gateway, body, {"anthropic-beta": "foo-2026-01-01,bar"})
    assert status == 200
    assert out["content"][0]["text"] == "echo: hi"
    assert "cache_control" not in json.dumps(upstream.mock.requests[-1].body)


@pytest.mark.parametrize(
    ("script", "status", "etype", "extra_headers"),
    [
        (Script(status=400, error_code="invalid_value"), 400, "invalid_request_error", {}),
        (
            Script(status=401, error_code="invalid_api_key"),
            401,
            "authentication_error",
            {"x-should-retry": "false"},
        ),
        (Script(status=403), 403, "permission_error", {"x-should-retry": "false"}),
        (Script(status=404, error_code="model_not_found"), 404, "not_found_error", {}),
        (
            Script(status=429, error_code="rate_limit_exceeded", headers={"retry-after": "7"}),
            429,
            "rate_limit_error",
            {"retry-after": "7"},
        ),
        (
            Script(status=429, error_code="insufficient_quota", error_type="insufficient_quota"),
            402,
            "billing_error",
            {"x-should-retry": "false"},
        ),
        (Script(status=500, error_code="server_error"), 500, "api_error", {}),
        (Script(status=502, raw_body=b"<html>Bad Gateway</html>"), 500, "api_error", {}),
        (Script(status=503, error_code="overloaded"), 529, "overloaded_error", {}),
        (Script(status=504, raw_body=b""), 504, "timeout_error", {}),
    ],
)
async def test_upstream_errors_mapped(
    gateway: TestServer,
    upstream: Upstream,
    script: Script,
    status: int,
    etype: str,
    extra_headers: dict[str, str],
) -> None:
    upstream.mock.enqueue(script)
    got_status, headers, body = await post(
        gateway, {"model": MODEL, "max_tokens": 10, "messages": [user("x")]}
    )
    assert got_status == status
    assert body["type"] == "error"
    assert body["error"]["type"] == etype
    assert body["request_id"] == headers["request-id"]
    for k, v in extra_headers.items():
        assert headers[k] == v
    if "retry-after" not in extra_headers:
        assert "retry-after" not in headers


async def test_sdk_raises_mapped_classes(sdk: anthropic.AsyncAnthropic, upstream: Upstream) -> None:
    upstream.mock.enqueue(Script(status=503, error_code="overloaded"))
    with pytest.raises(anthropic.APIStatusError) as info:
        await sdk.messages.create(model=MODEL, max_tokens=10, messages=[user("x")])
    assert info.value.status_code == 529
    upstream.mock.enqueue(Script(status=429, error_code="rate_limit_exceeded"))
    with pytest.raises(anthropic.RateLimitError):
        await sdk.messages.create(model=MODEL, max_tokens=10, messages=[user("x")])


async def test_context_overflow_is_prompt_too_long(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(
        Script(
            status=400,
            error_code="context_length_exceeded",
            error_message="Your input exceeds the context window of this model.",
        )
    )
    status, _, body = await post(
        gateway, {"model": MODEL, "max_tokens": 10, "messages": [user("x")]}
    )
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("prompt is too long")


async def test_upstream_unreachable_is_api_error(
    make_gateway: GatewayFactory, unused_tcp_port: int
) -> None:
    gw = await make_gateway(
        upstreams={
            "default": {"base_url": f"http://127.0.0.1:{unused_tcp_port}/v1", "api_key_env": ""}
        }
    )
    status, _, body = await post(gw, {"model": MODEL, "max_tokens": 10, "messages": [user("x")]})
    assert status == 500
    assert body["error"]["type"] == "api_error"
    assert body["error"]["message"] == (
        f"cannot reach upstream 127.0.0.1:{unused_tcp_port} (connection refused)"
    )


async def test_malformed_upstream_body_is_api_error(
    gateway: TestServer, upstream: Upstream
) -> None:
    upstream.mock.enqueue(
        Script(raw_body=b'{"id": "resp_1", "output": [', content_type="application/json")
    )
    status, _, body = await post(
        gateway, {"model": MODEL, "max_tokens": 10, "messages": [user("x")]}
    )
    assert status == 502
    assert body["error"]["type"] == "api_error"
    assert body["error"]["message"].startswith("upstream returned an invalid response: ")


# ---------------------------------------------------------------------------------------------
# Correlation ids, health, logging


async def test_correlation_id_echoed_and_forwarded(gateway: TestServer, upstream: Upstream) -> None:
    status, headers, _ = await post(
        gateway,
        {"model": MODEL, "max_tokens": 10, "messages": [user("x")]},
        {"X-Correlation-ID": "trace-abc.123"},
    )
    assert status == 200
    assert headers["X-Correlation-ID"] == "trace-abc.123"
    assert upstream.mock.requests[-1].headers["X-Correlation-ID"] == "trace-abc.123"


@pytest.mark.parametrize("bad", ["has space", "x" * 200, "semi;colon", "ümlaut"])
async def test_malformed_correlation_id_replaced(
    gateway: TestServer, upstream: Upstream, bad: str
) -> None:
    status, headers, _ = await post(
        gateway,
        {"model": MODEL, "max_tokens": 10, "messages": [user("x")]},
        {"X-Correlation-ID": bad.encode("utf-8").decode("latin-1")},
    )
    assert status == 200
    assert headers["X-Correlation-ID"] == headers["request-id"]
    assert upstream.mock.requests[-1].headers["X-Correlation-ID"] == headers["request-id"]


async def test_health_endpoints(gateway: TestServer) -> None:
    async with aiohttp.ClientSession() as s:
        for method, path in [("GET", "/healthz"), ("GET", "/"), ("HEAD", "/")]:
            async with s.request(method, gateway.make_url(path)) as r:
                assert r.status == 200, (method, path)
        async with s.post(gateway.make_url("/api/event_logging/batch"), json={"events": []}) as r:
            assert r.status == 204
        async with s.get(gateway.make_url("/nope")) as r:
            assert r.status == 404
            assert (await r.json())["error"]["type"] == "not_found_error"
        async with s.get(gateway.make_url("/v1/messages")) as r:
            assert r.status == 405
            assert (await r.json())["error"]["type"] == "invalid_request_error"


async def test_beta_query_accepted(gateway: TestServer) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gateway.make_url("/v1/messages?beta=true"),
            json={"model": MODEL, "max_tokens": 10, "messages": [user("q")]},
        ) as r,
    ):
        assert r.status == 200


CANARY = "CANARY-7f3a9"


async def test_log_canary(
    log_lines: list[str], make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway()
    upstream.mock.enqueue(Script(items=[Text(f"reply {CANARY}")]))
    body = {
        "model": MODEL,
        "max_tokens": 10,
        "system": f"system {CANARY}",
        "messages": [
            user(f"prompt {CANARY}"),
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "t1",
                        "name": "get_weather",
                        "input": {"city": CANARY},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": f"result {CANARY}"}
                ],
            },
        ],
        "tools": [WEATHER_TOOL],
    }
    headers = {"x-api-key": f"sk-ant-{CANARY}", "Authorization": f"Bearer {CANARY}"}
    status, _, _ = await post(gw, body, headers)
    assert status == 200
    upstream.mock.enqueue(Script(status=400, error_message=f"bad {CANARY}"))
    status, _, _ = await post(gw, body, headers)
    assert status == 400
    status, _, _ = await post(
        gw, {"model": MODEL, "max_tokens": "x", "messages": [user(CANARY)]}, headers
    )
    assert status == 400
    summaries = [json.loads(line) for line in log_lines if '"request_end"' in line]
    assert len(summaries) == 3
    assert [s["status"] for s in summaries] == [200, 400, 400]
    assert summaries[0]["model"] == MODEL
    assert summaries[0]["upstream_status"] == 200
    assert summaries[0]["output_tokens"] > 0
    assert summaries[1]["error_type"] == "invalid_request_error"
    for line in log_lines:
        assert CANARY not in line
        assert UPSTREAM_KEY not in line
