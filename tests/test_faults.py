"""Fault injection (issue 5): one test per upstream fault and per limit.

Each asserts the exact status and error type (or the exact SSE error event), that it took a
bounded time, the attempt count from the summary log line, that the next normal request
through the same gateway succeeds, and that no secret reached a log line.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import msgspec
import orjson
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from gateway.keys import UPSTREAM
from gateway.mock_upstream import Script, Text
from tests.anthropic_grammar import check_stream, parse_frames
from tests.conftest import UPSTREAM_KEY, GatewayFactory, Upstream

MODEL = "claude-sonnet-5-5"
CANARY = "CANARY-faults-51c2"


def body(stream: bool = False, text: str = f"hello {CANARY}") -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 50,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    }


async def send(
    gw: TestServer,
    payload: Any,
    headers: dict[str, str] | None = None,
    path: str = "/v1/messages",
) -> tuple[int, CIMultiDict[str], bytes, float]:
    data = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
    t0 = time.monotonic()
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.make_url(path),
            data=data,
            headers={"content-type": "application/json", **(headers or {})},
        ) as r,
    ):
        raw = await r.read()
        return r.status, CIMultiDict(r.headers), raw, time.monotonic() - t0


def summaries(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if '"request_end"' in line]


def assert_clean(lines: list[str]) -> None:
    for line in lines:
        assert CANARY not in line
        assert UPSTREAM_KEY not in line
        assert "sk-ant-client" not in line


async def assert_next_request_ok(gw: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(Script(items=[Text("fine")]))
    status, _, raw, _ = await send(gw, body())
    assert status == 200, raw
    assert orjson.loads(raw)["content"] == [{"type": "text", "text": "fine"}]


def error_of(raw: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(raw)
    assert doc["type"] == "error"
    err: dict[str, Any] = doc["error"]
    return err


# ---------------------------------------------------------------------------------------------
# Upstream faults before the first byte


async def test_refused_connection_retried_then_api_error(
    make_gateway: GatewayFactory, unused_tcp_port: int, log_lines: list[str]
) -> None:
    gw = await make_gateway(
        upstreams={"default": {"base_url": f"http://127.0.0.1:{unused_tcp_port}/v1"}},
        retries={"max_attempts": 3, "backoff_base": 0.01, "backoff_max": 0.02},
    )
    status, _, raw, took = await send(gw, body())
    assert status == 500
    assert error_of(raw)["type"] == "api_error"
    assert took < 2.0
    assert summaries(log_lines)[-1]["attempts"] == 3
    assert_clean(log_lines)


async def test_stall_before_headers_is_timeout(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway(timeouts={"headers": 0.3})
    upstream.mock.enqueue(Script(items=[Text("late")], delay_before_headers=3))
    status, _, raw, took = await send(gw, body())
    assert status == 504
    assert error_of(raw)["type"] == "timeout_error"
    assert 0.3 <= took < 1.5
    assert summaries(log_lines)[-1]["attempts"] == 1
    await assert_next_request_ok(gw, upstream)
    assert_clean(log_lines)


async def test_five_xx_then_success_is_retried(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway(retries={"max_attempts": 3, "backoff_base": 0.01})
    upstream.mock.enqueue(
        Script(status=502, raw_body=b"bad gateway"),
        Script(status=503, error_code="overloaded"),
        Script(items=[Text("third time lucky")]),
    )
    status, _, raw, took = await send(gw, body())
    assert status == 200
    assert orjson.loads(raw)["content"][0]["text"] == "third time lucky"
    assert len(upstream.mock.requests) == 3
    assert summaries(log_lines)[-1]["attempts"] == 3
    assert took < 2.0
    assert_clean(log_lines)


async def test_retry_after_is_honoured(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway(retries={"max_attempts": 2})
    upstream.mock.enqueue(
        Script(status=429, error_code="rate_limit_exceeded", headers={"retry-after-ms": "400"}),
        Script(items=[Text("ok")]),
    )
    status, _, _, took = await send(gw, body())
    assert status == 200
    assert 0.4 <= took < 1.5
    assert summaries(log_lines)[-1]["attempts"] == 2


async def test_long_retry_after_is_passed_to_the_client(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway(retries={"max_attempts": 3, "retry_after_cap": 1})
    upstream.mock.enqueue(
        Script(status=429, error_code="rate_limit_exceeded", headers={"retry-after": "30"})
    )
    status, headers, raw, took = await send(gw, body())
    assert status == 429
    assert headers["retry-after"] == "30"
    assert error_of(raw)["type"] == "rate_limit_error"
    assert took < 1.0
    assert summaries(log_lines)[-1]["attempts"] == 1


@pytest.mark.parametrize(
    ("script", "status", "etype"),
    [
        (Script(status=400, error_code="invalid_value"), 400, "invalid_request_error"),
        (Script(status=401, error_code="invalid_api_key"), 401, "authentication_error"),
        (Script(status=403), 403, "permission_error"),
        (Script(status=404, error_code="model_not_found"), 404, "not_found_error"),
        (
            Script(status=429, error_code="insufficient_quota", error_type="insufficient_quota"),
            402,
            "billing_error",
        ),
    ],
)
async def test_non_retryable_statuses_are_not_retried(
    make_gateway: GatewayFactory,
    upstream: Upstream,
    log_lines: list[str],
    script: Script,
    status: int,
    etype: str,
) -> None:
    gw = await make_gateway(retries={"max_attempts": 3, "backoff_base": 0.01})
    upstream.mock.enqueue(script)  # a retry would get the default echo answer: a 200
    got, _, raw, _ = await send(gw, body())
    assert (got, error_of(raw)["type"]) == (status, etype)
    assert len(upstream.mock.requests) == 1
    assert summaries(log_lines)[-1]["attempts"] == 1
    await assert_next_request_ok(gw, upstream)
    assert_clean(log_lines)


# ---------------------------------------------------------------------------------------------
# Upstream faults after the first byte


async def stream(
    gw: TestServer, payload: Any
) -> tuple[int, list[tuple[str, dict[str, Any]]], float]:
    status, _, raw, took = await send(gw, payload)
    assert status == 200, raw
    events = parse_frames(raw)
    check_stream(events)
    return status, events, took


@pytest.mark.parametrize(
    ("script", "etype"),
    [
        (Script(items=[Text("one two three four")], drop_after_bytes=700), "api_error"),
        (
            Script(
                raw_body=b'event: response.created\ndata: {"type":"response.created"}\n\n'
                b"data: {garbage\n\n",
                content_type="text/event-stream",
            ),
            "api_error",
        ),
        (Script(items=[Text("x")], end="none"), "api_error"),
        (Script(items=[Text("x")], end="failed"), "api_error"),
    ],
    ids=["reset-mid-stream", "garbage", "no-terminal-event", "response-failed"],
)
async def test_stream_faults_end_with_one_error_event(
    gateway: TestServer,
    upstream: Upstream,
    log_lines: list[str],
    script: Script,
    etype: str,
) -> None:
    upstream.mock.enqueue(script)
    _, events, took = await stream(gateway, body(stream=True))
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == etype
    assert [e for e, _ in events].count("error") == 1
    assert took < 2.0
    assert summaries(log_lines)[-1]["outcome"] == "upstream_error"
    await assert_next_request_ok(gateway, upstream)
    assert_clean(log_lines)


async def test_stall_mid_stream_is_idle_timeout(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway(timeouts={"idle": 0.3})
    upstream.mock.enqueue(Script(items=[Text("a b c d")], stall_after_events=5))
    _, events, took = await stream(gw, body(stream=True))
    assert events[-1][1]["error"]["type"] == "timeout_error"
    assert 0.3 <= took < 1.5
    assert summaries(log_lines)[-1]["outcome"] == "upstream_timeout"
    assert upstream.mock.open_streams() == 0 or await _settles(upstream)
    await assert_next_request_ok(gw, upstream)


async def _settles(upstream: Upstream) -> bool:
    for _ in range(100):
        if upstream.mock.open_streams() == 0:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_drip_one_byte_at_a_time(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(
        Script(items=[Text("Ünï ✓ drip 🎉", chunks=["Ünï", " ✓", " drip", " 🎉"])])
    )
    _, plain, _ = await stream(gateway, body(stream=True))
    upstream.mock.enqueue(
        Script(
            items=[Text("Ünï ✓ drip 🎉", chunks=["Ünï", " ✓", " drip", " 🎉"])], split=1, crlf=True
        )
    )
    _, dripped, _ = await stream(gateway, body(stream=True))

    def strip(events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        out = []
        for name, data in events:
            if name == "message_start":
                data = {**data, "message": {**data["message"], "id": "x"}}
            out.append((name, data))
        return out

    assert strip(dripped) == strip(plain)


async def test_oversized_upstream_event(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway(server={"max_event_bytes": 4096})
    upstream.mock.enqueue(Script(items=[Text("x" * 10_000, chunks=["x" * 10_000])]))
    _, events, _ = await stream(gw, body(stream=True))
    assert events[-1][0] == "error"
    err = events[-1][1]["error"]
    assert err["type"] == "api_error"
    assert "4096" in err["message"]
    await assert_next_request_ok(gw, upstream)


async def test_total_cap_on_a_slow_stream(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway(timeouts={"total": 0.5}, server={"ping_interval": 0.2})
    upstream.mock.enqueue(Script(items=[Text("a b c d e f g h")], delay_between_events=0.15))
    _, events, took = await stream(gw, body(stream=True))
    assert events[-1][1]["error"]["type"] == "timeout_error"
    assert 0.5 <= took < 1.5
    assert summaries(log_lines)[-1]["outcome"] == "timeout"


async def test_total_cap_before_headers(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    gw = await make_gateway(timeouts={"total": 0.3})
    upstream.mock.enqueue(Script(items=[Text("late")], delay_before_headers=3))
    status, _, raw, took = await send(gw, body())
    assert (status, error_of(raw)["type"]) == (504, "timeout_error")
    assert took < 1.5


# ---------------------------------------------------------------------------------------------
# Client side: disconnects, limits, auth, hostile input


async def test_thousand_aborted_streams_leave_nothing_behind(
    gateway: TestServer, upstream: Upstream
) -> None:
    n = 1000
    upstream.mock.enqueue(
        *[Script(items=[Text("a b c d e f")], stall_after_events=4) for _ in range(n)]
    )
    payload = orjson.dumps(body(stream=True))
    connector = aiohttp.TCPConnector(limit=50, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def abort_one() -> None:
            async with s.post(
                gateway.make_url("/v1/messages"),
                data=payload,
                headers={"content-type": "application/json"},
            ) as r:
                assert r.status == 200
                await r.content.readuntil(b"\n\n")
                r.close()

        await asyncio.gather(*(abort_one() for _ in range(n)))
    for _ in range(300):
        if upstream.mock.open_streams() == 0:
            break
        await asyncio.sleep(0.01)
    assert upstream.mock.open_streams() == 0
    gw_connector = gateway.app[UPSTREAM].session.connector
    assert gw_connector is not None
    assert len(gw_connector._acquired) == 0
    tasks = [t for t in asyncio.all_tasks() if "relay" in repr(t.get_coro())]
    assert tasks == []
    await assert_next_request_ok(gateway, upstream)


async def test_body_too_large_is_413(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    gw = await make_gateway(server={"max_body_bytes": 2048})
    status, _, raw, _ = await send(gw, body(text="x" * 5000))
    assert (status, error_of(raw)["type"]) == (413, "request_too_large")
    assert upstream.mock.requests == []
    await assert_next_request_ok(gw, upstream)


async def test_in_flight_limit_sheds_with_529(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(server={"max_in_flight": 1})
    upstream.mock.enqueue(Script(items=[Text("slow")], delay_before_headers=0.5))
    slow = asyncio.create_task(send(gw, body()))
    await asyncio.sleep(0.15)
    status, headers, raw, _ = await send(gw, body())
    assert status == 529
    assert error_of(raw)["type"] == "overloaded_error"
    assert headers["retry-after"] == "1"
    assert (await slow)[0] == 200
    await assert_next_request_ok(gw, upstream)


KEYS_ENV = {"GATEWAY_API_KEYS": "gw-key-one, gw-key-two"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"x-api-key": "wrong"}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"x-api-key": "gw-key-one"}, 200),
        ({"Authorization": "Bearer gw-key-two"}, 200),
        ({"authorization": "bearer gw-key-one"}, 200),
    ],
)
async def test_inbound_auth(
    make_gateway: GatewayFactory,
    upstream: Upstream,
    log_lines: list[str],
    headers: dict[str, str],
    status: int,
) -> None:
    gw = await make_gateway(env=KEYS_ENV)
    got, resp_headers, raw, _ = await send(gw, body(), headers)
    assert got == status
    if status == 401:
        assert error_of(raw)["type"] == "authentication_error"
        assert resp_headers["x-should-retry"] == "false"
        assert upstream.mock.requests == []
    else:
        sent = upstream.mock.requests[-1].headers
        assert sent["Authorization"] == f"Bearer {UPSTREAM_KEY}"  # never the client's key
        assert "x-api-key" not in {k.lower() for k in sent}
    async with aiohttp.ClientSession() as s, s.get(gw.make_url("/healthz")) as r:
        assert r.status == 200  # health stays open
    for line in log_lines:
        assert "gw-key" not in line


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"model": "\xff\xfe", "max_tokens": 1, "messages": []}', "UTF-8"),
        (
            b'{"model":"m","max_tokens":1,"messages":[{"role":"assistant","content":[{"type":'
            b'"tool_use","id":"a","name":"b","input":' + b"[" * 100_000 + b"]" * 100_000 + b"}]}]}",
            "nested too deeply",
        ),
        (b'{"model": 5, "max_tokens": 1, "messages": [{"role":"user","content":"x"}]}', "$.model"),
        (
            b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":5}]}',
            "$.messages[0].content",
        ),
        (
            b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"text"}]}]}',
            "text",
        ),
        (
            b'{"model":"m","max_tokens":1e400,"messages":[{"role":"user","content":"x"}]}',
            "max_tokens",
        ),
        (
            b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"tools":[{}]}',
            "$.tools[0]",
        ),
        (
            b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"tool"}}',
            "tool_choice",
        ),
        (
            b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"thinking":"yes"}',
            "$.thinking",
        ),
        (
            b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"metadata":[]}',
            "$.metadata",
        ),
    ],
)
async def test_hostile_input_is_a_precise_400(
    gateway: TestServer, upstream: Upstream, raw: bytes, fragment: str
) -> None:
    status, _, out, took = await send(gateway, raw)
    assert status == 400, out[:300]
    err = error_of(out)
    assert err["type"] == "invalid_request_error"
    assert fragment in err["message"]
    assert took < 2.0
    assert upstream.mock.requests == []


async def test_deep_but_decodable_tool_input_is_forwarded(
    gateway: TestServer, upstream: Upstream
) -> None:
    deep: Any = "leaf"
    for _ in range(400):  # deeper than orjson's 255-level limit
        deep = {"k": deep}
    payload = {
        "model": MODEL,
        "max_tokens": 20,
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": deep}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
            },
        ],
    }
    status, _, raw, _ = await send(gateway, payload)
    assert status == 200, raw[:300]
    call = [i for i in upstream.mock.requests[-1].body["input"] if i.get("type") == "function_call"]
    assert json.loads(call[0]["arguments"]) == deep


async def test_huge_string_is_accepted(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(Script(items=[Text("ok")]))
    status, _, raw, _ = await send(gateway, body(text="y" * 8_000_000))
    assert status == 200, raw[:200]


async def test_header_injection_in_correlation_id_is_neutralised(
    gateway: TestServer, upstream: Upstream
) -> None:
    host, port = gateway.host, gateway.port
    reader, writer = await asyncio.open_connection(host, port)
    payload = orjson.dumps(body())
    # a raw request whose correlation id tries to smuggle a header via an obs-fold / bad chars
    request = (
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Correlation-ID: abc\x0bSet-Cookie: evil=1\r\n"
        b"Content-Length: "
        + str(len(payload)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + payload
    )
    writer.write(request)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    head = response.split(b"\r\n\r\n", 1)[0].lower()
    assert b"set-cookie" not in head
    assert b"evil" not in head
    status_line = head.split(b"\r\n", 1)[0]
    # aiohttp's parser rejects the control character before any handler runs
    assert status_line.startswith((b"http/1.1 200", b"http/1.1 400", b"http/1.0 400"))
