"""count_tokens under stress (issue 10 items 8, 12): inputs far beyond the local tokenizer's
own limits are counted, never a 500; one client leaving a coalesced count never fails the
others."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.count_tokens import local_count
from tests.conftest import GatewayFactory, Upstream


def count_body(text: str) -> dict[str, Any]:
    return {"model": "claude-sonnet-5-5", "messages": [{"role": "user", "content": text}]}


async def post_count(gw: TestServer, payload: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.make_url("/v1/messages/count_tokens"), json=payload) as r,
    ):
        return r.status, await r.json()


@pytest.mark.parametrize(
    "text",
    [
        "a b " * 250_000,  # 1,000,000 characters: past the tokenizer's input cap
        "word " * 160_000,  # 800,000 characters, ~160k tokens in one piece
        "a b " * 150_000,  # 300,000 tokens: past the tokenizer's per-call token cap
        "ü" * 1_100_000,  # multi-byte characters
    ],
    ids=["1M-chars", "800k-chars", "300k-tokens", "1.1M-umlauts"],
)
def test_local_count_handles_any_length(text: str) -> None:
    part = {"type": "input_text", "text": text}
    n = local_count({"input": [{"role": "user", "content": [part]}]})
    assert n > len(text) // 8


async def test_count_tokens_of_a_huge_input_is_200(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    chat = {"base_url": upstream.url, "api_key_env": "TEST_UPSTREAM_KEY", "dialect": "chat"}
    gw = await make_gateway(upstreams={"default": chat})
    status, doc = await post_count(gw, count_body("a b " * 300_000))
    assert status == 200, doc
    assert 500_000 <= doc["input_tokens"] <= 700_000


async def test_a_coalesced_count_survives_the_first_caller_leaving(
    gateway: TestServer, upstream: Upstream, log_lines: list[str]
) -> None:
    upstream.mock.input_tokens_delay = 0.5
    payload = count_body("the same text for both")
    async with aiohttp.ClientSession() as first, aiohttp.ClientSession() as second:
        leaving = asyncio.create_task(
            first.post(gateway.make_url("/v1/messages/count_tokens"), json=payload)
        )
        await asyncio.sleep(0.1)
        staying = asyncio.create_task(
            second.post(gateway.make_url("/v1/messages/count_tokens"), json=payload)
        )
        await asyncio.sleep(0.1)
        leaving.cancel()
        await first.close()  # the first client hangs up mid-count
        resp = await staying
        assert resp.status == 200
        doc = await resp.json()
    assert isinstance(doc["input_tokens"], int) and doc["input_tokens"] > 0
    counted = [r for r in upstream.mock.requests if r.path.endswith("/input_tokens")]
    assert len(counted) == 1
    ends = [json.loads(x) for x in log_lines if '"request_end"' in x]
    assert sorted(e["status"] for e in ends) == [200, 499]
