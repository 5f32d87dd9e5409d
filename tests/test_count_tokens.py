"""count_tokens (exact upstream count, cache, coalescing, local fallback) and /v1/models."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.count_tokens import local_count
from gateway.keys import COUNTER
from tests.conftest import GatewayFactory, Upstream
from tests.fixtures.claude_code import claude_code_request

MODEL = "claude-sonnet-5-5"


async def call(gateway: TestServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, gateway.make_url(path), json=body) as r,
    ):
        return r.status, await r.json()


def count_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "How many tokens is this?"}],
        **extra,
    }


async def test_exact_count_from_upstream(gateway: TestServer, upstream: Upstream) -> None:
    status, body = await call(gateway, "POST", "/v1/messages/count_tokens?beta=true", count_body())
    assert status == 200
    sent = upstream.mock.requests[-1]
    assert sent.path == "/v1/responses/input_tokens"
    # the mock answers len(raw body) // 4; our body is compact JSON of the translated request
    assert body == {"input_tokens": len(orjson.dumps(sent.body)) // 4}
    assert sent.body["instructions"] == "You are terse."
    assert sent.body["model"] == "gpt-5"
    for key in ("max_output_tokens", "store", "stream", "include", "prompt_cache_key"):
        assert key not in sent.body


async def test_identical_requests_cached(gateway: TestServer, upstream: Upstream) -> None:
    first = await call(gateway, "POST", "/v1/messages/count_tokens", count_body())
    second = await call(gateway, "POST", "/v1/messages/count_tokens", count_body())
    assert first == second
    assert len(upstream.mock.requests) == 1
    other = count_body(messages=[{"role": "user", "content": "something else entirely"}])
    await call(gateway, "POST", "/v1/messages/count_tokens", other)
    assert len(upstream.mock.requests) == 2


async def test_concurrent_identical_requests_coalesced(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    calls = 0

    async def slow_count(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        return web.json_response({"object": "response.input_tokens", "input_tokens": 1234})

    app = web.Application()
    app.router.add_post("/v1/responses/input_tokens", slow_count)
    counting = await aiohttp_server(app)
    gw = await make_gateway(
        upstreams={"default": {"base_url": str(counting.make_url("/v1")), "api_key_env": ""}}
    )
    results = await asyncio.gather(
        *(call(gw, "POST", "/v1/messages/count_tokens", count_body()) for _ in range(10))
    )
    assert results == [(200, {"input_tokens": 1234})] * 10
    assert calls == 1
    assert gw.app[COUNTER].upstream_calls == 1


@pytest.mark.parametrize(
    ("status", "payload"),
    [(500, {"error": {"message": "boom", "code": "server_error"}}), (200, {"unexpected": 1})],
)
async def test_upstream_failure_falls_back_to_local(
    aiohttp_server: Any, make_gateway: GatewayFactory, status: int, payload: Any
) -> None:
    async def failing(request: web.Request) -> web.Response:
        return web.json_response(payload, status=status)

    app = web.Application()
    app.router.add_post("/v1/responses/input_tokens", failing)
    bad = await aiohttp_server(app)
    gw = await make_gateway(
        upstreams={"default": {"base_url": str(bad.make_url("/v1")), "api_key_env": ""}}
    )
    body = count_body(messages=[{"role": "user", "content": "hello world"}])
    assert await call(gw, "POST", "/v1/messages/count_tokens", body) == (
        200,
        {
            "input_tokens": local_count(
                {
                    "instructions": "You are terse.",
                    "input": [
                        {"role": "user", "content": [{"type": "input_text", "text": "hello world"}]}
                    ],
                }
            )
        },
    )


async def test_unreachable_upstream_falls_back_to_local(
    make_gateway: GatewayFactory, unused_tcp_port: int
) -> None:
    gw = await make_gateway(
        upstreams={
            "default": {"base_url": f"http://127.0.0.1:{unused_tcp_port}/v1", "api_key_env": ""}
        }
    )
    status, body = await call(gw, "POST", "/v1/messages/count_tokens", count_body())
    assert status == 200
    assert 10 <= body["input_tokens"] <= 40


async def test_bad_count_request_is_400(gateway: TestServer, upstream: Upstream) -> None:
    status, body = await call(gateway, "POST", "/v1/messages/count_tokens", {"model": MODEL})
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert "messages" in body["error"]["message"]
    assert upstream.mock.requests == []


def test_local_count_o200k() -> None:
    payload = {
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hello world"}]}]
    }
    # "hello world" is 2 o200k tokens; + 4 per item + 3 reply priming
    assert local_count(payload) == 2 + 4 + 3


def test_local_count_claude_code_shape_is_plausible() -> None:
    from gateway.anthropic.signatures import Signer
    from gateway.dialects.responses.request import to_responses
    from gateway.schemas.anthropic import REQUEST_DECODER
    from gateway.settings import Route

    body = orjson.dumps(claude_code_request(turns=30, tools=22, system_kb=20))
    route = Route(
        name="r",
        dialect="responses",
        base_url="http://x",
        api_key=None,
        headers={},
        upstream_model="gpt-5",
    )
    payload = to_responses(REQUEST_DECODER.decode(body), route, Signer(b"k" * 32), stream=False)
    n = local_count(payload)
    # English prose and JSON run 3.5-5 bytes a token in o200k
    assert len(body) / 5.5 < n < len(body) / 3


# ---------------------------------------------------------------------------------------------
# /v1/models


async def test_models_list_anthropic_format(gateway: TestServer) -> None:
    status, body = await call(gateway, "GET", "/v1/models")
    assert status == 200
    assert body == {
        "data": [
            {
                "type": "model",
                "id": mid,
                "display_name": name,
                "created_at": "2026-01-01T00:00:00Z",
            }
            for mid, name in [
                ("claude-opus-5-5", "Claude Opus 5.5"),
                ("claude-sonnet-5-5", "Claude Sonnet 5.5"),
                ("claude-haiku-5-5", "Claude Haiku 5.5"),
            ]
        ],
        "has_more": False,
        "first_id": "claude-opus-5-5",
        "last_id": "claude-haiku-5-5",
    }


@pytest.mark.parametrize("model_id", ["claude-sonnet-5-5", "claude-haiku-9-1", "claude-x"])
async def test_model_lookup_routes_any_claude_name(gateway: TestServer, model_id: str) -> None:
    status, body = await call(gateway, "GET", f"/v1/models/{model_id}")
    assert status == 200
    assert body["id"] == model_id and body["type"] == "model"


async def test_model_lookup_unroutable_is_404(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(routes=[{"match": ["claude-*"], "model": "big"}])
    assert (await call(gw, "GET", "/v1/models/gpt-4o"))[1]["error"]["type"] == "not_found_error"
    assert (await call(gw, "GET", "/v1/models/claude-opus-5-5"))[0] == 200


async def test_chat_route_counts_locally(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    gw = await make_gateway(
        upstreams={"default": {"base_url": upstream.url, "api_key_env": "", "dialect": "chat"}}
    )
    body = count_body(messages=[{"role": "user", "content": "hello world"}])
    status, out = await call(gw, "POST", "/v1/messages/count_tokens", body)
    assert status == 200
    assert out == {
        "input_tokens": local_count(
            {
                "instructions": "You are terse.",
                "input": [
                    {"role": "user", "content": [{"type": "input_text", "text": "hello world"}]}
                ],
            }
        )
    }
    assert upstream.mock.requests == []  # Chat servers have no counting endpoint
