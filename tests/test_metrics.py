"""GET /metrics (Prometheus text) and the overhead header (issue 7 item 4)."""

from __future__ import annotations

import re

import aiohttp
from aiohttp.test_utils import TestServer

from gateway.mock_upstream import Script, Text
from tests.conftest import Upstream

CANARY = "CANARY-metrics-9d1"


async def scrape(gw: TestServer) -> str:
    async with aiohttp.ClientSession() as s, s.get(gw.make_url("/metrics")) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return await r.text()


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def post(
    gw: TestServer, model: str, stream: bool = False, text: str = "hi"
) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as s:
        r = await s.post(
            gw.make_url("/v1/messages"),
            json={
                "model": model,
                "max_tokens": 20,
                "stream": stream,
                "messages": [{"role": "user", "content": text}],
            },
        )
        await r.read()
        return r


async def test_counters_move_and_labels_hold_no_client_text(
    gateway: TestServer, upstream: Upstream
) -> None:
    before = await scrape(gateway)
    route = "default:gpt-5"
    base = value(before, "gateway_requests_total", route=route, status="200")
    upstream.mock.enqueue(
        Script(
            items=[Text("ok")], usage={"input_tokens": 100, "cached_tokens": 60, "output_tokens": 7}
        )
    )
    r = await post(gateway, "claude-sonnet-5-5", text=CANARY)
    assert r.status == 200
    assert float(r.headers["x-gateway-overhead-ms"]) >= 0
    upstream.mock.enqueue(Script(items=[Text("ok")]))
    r = await post(gateway, "claude-sonnet-5-5", stream=True)
    assert float(r.headers["x-gateway-overhead-ms"]) >= 0
    upstream.mock.enqueue(Script(status=503, error_code="overloaded"))
    assert (await post(gateway, "claude-sonnet-5-5")).status == 529
    assert (await post(gateway, f"model with {CANARY} spaces")).status == 200

    after = await scrape(gateway)
    assert CANARY not in after
    assert value(after, "gateway_requests_total", route=route, status="200") == base + 3
    assert value(after, "gateway_requests_total", model="other", status="200") == 1
    assert (
        value(
            after,
            "gateway_requests_total",
            route=route,
            status="529",
            error_type="overloaded_error",
        )
        == 1
    )
    assert (
        value(after, "gateway_upstream_failures_total", route=route, error_type="overloaded_error")
        == 1
    )
    assert value(after, "gateway_upstream_attempts_total", route=route) == 4
    assert value(after, "gateway_tokens_total", route=route, kind="cache_read") == 60
    assert value(after, "gateway_tokens_total", route=route, kind="input") >= 40
    assert value(after, "gateway_time_to_first_byte_seconds_count", route=route) == 1
    assert value(after, "gateway_overhead_seconds_count", route=route) == 3
    assert value(after, "gateway_request_duration_seconds_count", route=route, stream="true") == 1
    assert value(after, "gateway_in_flight_requests") == 0
    assert value(after, "gateway_open_streams") == 0


async def test_health_and_metrics_requests_are_not_counted(gateway: TestServer) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.get(gateway.make_url("/healthz")) as r:
                assert r.status == 200
    text = await scrape(gateway)
    assert "gateway_requests_total{" not in text
