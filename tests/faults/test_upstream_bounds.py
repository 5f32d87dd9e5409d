"""Upstreams that misbehave (issue 10 items 4, 5, 9, 10): redirects are never followed, a
non-streamed answer is capped in its decoded size, each timeout is worded by what timed out and
a headers timeout is not retried, a 200 without a response is an error."""

from __future__ import annotations

import json
import tracemalloc
import zlib
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway.mock_upstream import MockUpstream, Script, Text
from tests.conftest import GatewayFactory, Upstream
from tests.faults.support import unanswered_port
from tests.test_faults import (
    assert_clean,
    assert_next_request_ok,
    body,
    error_of,
    send,
    summaries,
)


def chat_route(url: str) -> dict[str, Any]:
    return {"default": {"base_url": url, "api_key_env": "TEST_UPSTREAM_KEY", "dialect": "chat"}}


# ---------------------------------------------------------------------------------------------
# Item 4: redirects


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_upstream_redirect_is_an_error_and_nothing_goes_there(
    make_gateway: GatewayFactory,
    upstream: Upstream,
    aiohttp_server: Any,
    log_lines: list[str],
    status: int,
) -> None:
    elsewhere = MockUpstream()
    other: TestServer = await aiohttp_server(elsewhere.app)
    default = {"base_url": upstream.url, "api_key_env": "TEST_UPSTREAM_KEY"}
    gw = await make_gateway(
        upstreams={"default": {**default, "headers": {"api-key": "CANARY-faults-51c2-hdr"}}},
        retries={"max_attempts": 3, "backoff_base": 0.01},
    )
    target = str(other.make_url("/v1/responses"))
    upstream.mock.enqueue(Script(status=status, headers={"Location": target}, raw_body=b""))
    code, headers, raw, _ = await send(gw, body())
    assert code == 502
    err = error_of(raw)
    assert err["type"] == "api_error"
    assert str(status) in err["message"]
    assert f"127.0.0.1:{other.port}" in err["message"]
    assert headers["x-should-retry"] == "false"
    assert elsewhere.requests == []
    assert len(upstream.mock.requests) == 1
    assert summaries(log_lines)[-1]["attempts"] == 1
    await assert_next_request_ok(gw, upstream)
    assert_clean(log_lines)


async def test_redirect_on_a_streaming_request_too(
    make_gateway: GatewayFactory, upstream: Upstream, aiohttp_server: Any
) -> None:
    elsewhere = MockUpstream()
    other: TestServer = await aiohttp_server(elsewhere.app)
    gw = await make_gateway()
    upstream.mock.enqueue(
        Script(status=307, headers={"Location": str(other.make_url("/x"))}, raw_body=b"")
    )
    code, _, raw, _ = await send(gw, body(stream=True))
    assert code == 502
    assert error_of(raw)["type"] == "api_error"
    assert elsewhere.requests == []


# ---------------------------------------------------------------------------------------------
# Item 5: the size of a non-streamed answer


async def test_oversized_non_streamed_answer_is_502(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway(server={"max_upstream_body_bytes": 1024 * 1024})
    upstream.mock.enqueue(Script(raw_body=b'{"pad":"' + b"x" * (3 * 1024 * 1024) + b'"}'))
    code, _, raw, _ = await send(gw, body())
    assert code == 502
    err = error_of(raw)
    assert err["type"] == "api_error"
    assert "1048576" in err["message"]
    await assert_next_request_ok(gw, upstream)
    assert_clean(log_lines)


def gzip_bomb(inflated: int) -> bytes:
    """A gzip body of ``inflated`` zero bytes, built without holding them in memory."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    parts = [comp.compress(block) for _ in range(inflated >> 20)]
    parts.append(comp.flush())
    return b"".join(parts)


async def test_gzip_bomb_is_capped_while_inflating(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(server={"max_upstream_body_bytes": 4 * 1024 * 1024})
    bomb = gzip_bomb(256 * 1024 * 1024)
    assert len(bomb) < 512 * 1024
    upstream.mock.enqueue(
        Script(
            raw_body=bomb,
            headers={"Content-Encoding": "gzip"},
            content_type="application/json",
        )
    )
    tracemalloc.start()
    try:
        code, _, raw, _ = await send(gw, body())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 502
    assert "4194304" in error_of(raw)["message"]
    assert peak < 48 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB while inflating"
    await assert_next_request_ok(gw, upstream)


# ---------------------------------------------------------------------------------------------
# Item 9: timeouts


async def test_headers_timeout_is_not_retried(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway(
        timeouts={"headers": 0.3}, retries={"max_attempts": 3, "backoff_base": 0.01}
    )
    upstream.mock.enqueue(*[Script(items=[Text("late")], delay_before_headers=2) for _ in range(3)])
    code, _, raw, took = await send(gw, body())
    assert code == 504
    err = error_of(raw)
    assert err["type"] == "timeout_error"
    host = f"127.0.0.1:{upstream.server.port}"
    assert err["message"] == f"upstream {host} sent no response headers within 0.3s"
    assert len(upstream.mock.requests) == 1
    assert summaries(log_lines)[-1]["attempts"] == 1
    assert took < 1.5


async def test_connect_timeout_is_worded_and_retried(
    make_gateway: GatewayFactory, log_lines: list[str]
) -> None:
    with unanswered_port() as port:
        gw = await make_gateway(
            upstreams={"default": {"base_url": f"http://127.0.0.1:{port}/v1"}},
            timeouts={"connect": 0.2},
            retries={"max_attempts": 2, "backoff_base": 0.01, "backoff_max": 0.02},
        )
        code, _, raw, took = await send(gw, body())
    assert code == 504
    err = error_of(raw)
    assert err["type"] == "timeout_error"
    assert err["message"] == f"could not connect to upstream 127.0.0.1:{port} within 0.2s"
    assert summaries(log_lines)[-1]["attempts"] == 2
    assert 0.4 <= took < 2.0


# ---------------------------------------------------------------------------------------------
# Item 10: a 200 that is not an answer


@pytest.mark.parametrize("raw_body", [b"{}", b'{"id":"resp_1","object":"response"}'])
async def test_responses_200_without_output_is_502(
    make_gateway: GatewayFactory, upstream: Upstream, raw_body: bytes
) -> None:
    gw = await make_gateway()
    upstream.mock.enqueue(Script(raw_body=raw_body))
    code, _, raw, _ = await send(gw, body())
    assert code == 502
    err = error_of(raw)
    assert err == {"type": "api_error", "message": "upstream answered 200 without a response"}


@pytest.mark.parametrize("raw_body", [b"{}", b'{"id":"x","choices":[]}'])
async def test_chat_200_without_choices_is_502(
    make_gateway: GatewayFactory, upstream: Upstream, raw_body: bytes
) -> None:
    gw = await make_gateway(upstreams=chat_route(upstream.url))
    upstream.mock.enqueue(Script(raw_body=raw_body))
    code, _, raw, _ = await send(gw, body())
    assert code == 502
    err = error_of(raw)
    assert err == {"type": "api_error", "message": "upstream answered 200 without a response"}
    upstream.mock.enqueue(Script(items=[Text("fine")]))
    code, _, raw, _ = await send(gw, body())
    assert code == 200
    assert json.loads(raw)["content"] == [{"type": "text", "text": "fine"}]
