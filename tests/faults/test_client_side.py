"""Hostile or stuck clients (issue 10 items 1, 3, 11): a client that stops reading, a body
that trickles in, a body built to cost memory. Each is cut within its bound, frees its
in-flight slot and upstream connection at once, and the next normal request succeeds."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from gateway.keys import IN_FLIGHT, UPSTREAM
from gateway.mock_upstream import Script, Text
from tests.conftest import GatewayFactory, Upstream
from tests.faults.support import (
    big_stream,
    connection_closed,
    http_request,
    raw_connect,
    read_http_response,
    stuck_reader,
)
from tests.test_faults import assert_clean, assert_next_request_ok, body, error_of, send


def summaries(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if '"request_end"' in line]


async def admitted(gw: TestServer, n: int) -> None:
    """Wait until ``n`` requests hold in-flight slots (their handlers are running)."""
    for _ in range(200):
        if gw.app[IN_FLIGHT].value >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{n} requests never got in flight")


async def freed(gw: TestServer, upstream: Upstream, within: float) -> float:
    """Seconds until no request holds a slot, an upstream stream or a pooled connection."""
    t0 = time.monotonic()
    connector = gw.app[UPSTREAM].session.connector
    assert connector is not None
    while time.monotonic() - t0 < within:
        slots = gw.app[IN_FLIGHT]
        if (
            slots.value == 0
            and slots.receiving == 0
            and upstream.mock.open_streams() == 0
            and not connector._acquired
        ):
            return time.monotonic() - t0
        await asyncio.sleep(0.02)
    raise AssertionError(
        f"still held after {within}s: in_flight={gw.app[IN_FLIGHT].value} "
        f"receiving={gw.app[IN_FLIGHT].receiving} upstream_open={upstream.mock.open_streams()}"
    )


# ---------------------------------------------------------------------------------------------
# Item 1: a client that stops reading a stream


async def test_stuck_readers_are_cut_and_free_their_slots(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway(server={"max_in_flight": 2}, timeouts={"client_send": 0.5})
    upstream.mock.enqueue(big_stream(), big_stream())
    async with (
        stuck_reader(gw, body(stream=True)) as a,
        stuck_reader(gw, body(stream=True)) as b,
    ):
        await admitted(gw, 2)
        took = await freed(gw, upstream, within=5.0)
        # the slots are free while the stuck clients are still connected: cut, not waited out
        assert await connection_closed(a, 2.0)
        assert await connection_closed(b, 2.0)
    assert took < 4.0
    ends = summaries(log_lines)
    assert [e["outcome"] for e in ends] == ["client_stalled", "client_stalled"]
    await assert_next_request_ok(gw, upstream)
    assert_clean(log_lines)


async def test_total_cap_cuts_a_stream_blocked_on_its_client(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway(timeouts={"total": 1.0, "client_send": 60})
    upstream.mock.enqueue(big_stream())
    t0 = time.monotonic()
    async with stuck_reader(gw, body(stream=True)) as sock:
        await admitted(gw, 1)
        await freed(gw, upstream, within=4.0)
        took = time.monotonic() - t0
        assert await connection_closed(sock, 2.0)
    assert 1.0 <= took < 3.0
    assert summaries(log_lines)[-1]["outcome"] == "timeout"
    await assert_next_request_ok(gw, upstream)


async def test_a_slow_but_reading_client_is_not_cut(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    """The send timeout bounds a write that makes no progress, not a whole slow stream."""
    gw = await make_gateway(timeouts={"client_send": 0.5})
    upstream.mock.enqueue(big_stream())
    got = 0
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.make_url("/v1/messages"), json=body(stream=True)) as r,
    ):
        assert r.status == 200
        t0 = time.monotonic()
        while chunk := await r.content.read(256 * 1024):
            got += len(chunk)
            if time.monotonic() - t0 < 1.5:
                await asyncio.sleep(0.2)  # slower than the gateway writes, never 0.5 s idle
    assert got > 12_000_000
    assert summaries(log_lines)[-1]["outcome"] == "completed"


async def test_non_streamed_answer_to_a_stuck_reader_is_bounded(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway(timeouts={"client_send": 0.5})
    big = "y" * (12 * 1024 * 1024)
    upstream.mock.enqueue(Script(items=[Text(big)]))
    async with stuck_reader(gw, body()) as sock:
        while not upstream.mock.requests:  # noqa: ASYNC110 - wait for the request to go upstream
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.5)  # not reading: the answer fills every buffer on the way
        # reset, not kept alive: reading now ends at once
        assert await connection_closed(sock, 1.0)
        await freed(gw, upstream, within=1.0)
    assert summaries(log_lines)[-1]["outcome"] == "client_stalled"
    await assert_next_request_ok(gw, upstream)


# ---------------------------------------------------------------------------------------------
# Item 3: a body that trickles in


async def test_trickling_body_times_out_with_408_and_holds_no_slot(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway(server={"max_in_flight": 1}, timeouts={"client_body": 0.6})
    payload = orjson.dumps(body())
    loop = asyncio.get_running_loop()
    tricklers = [await raw_connect(gw) for _ in range(3)]
    try:
        t0 = time.monotonic()
        for sock in tricklers:
            await loop.sock_sendall(
                sock, http_request("/v1/messages", payload[:10], declared=len(payload))
            )
        # completed requests are served while three bodies are still arriving
        await assert_next_request_ok(gw, upstream)
        for sock in tricklers:
            status, raw = await read_http_response(sock, within=3.0)
            assert status == 408
            err = error_of(raw)
            assert err["type"] == "timeout_error"
            assert "0.6" in err["message"]
        took = time.monotonic() - t0
    finally:
        for sock in tricklers:
            sock.close()
    assert 0.6 <= took < 2.5
    assert gw.app[IN_FLIGHT].receiving == 0
    assert upstream.mock.requests[-1].path == "/v1/responses"
    assert len(upstream.mock.requests) == 1  # the trickled bodies never went upstream
    await assert_next_request_ok(gw, upstream)
    assert_clean(log_lines)


async def test_too_many_bodies_arriving_is_529(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(server={"max_receiving": 1}, timeouts={"client_body": 5})
    payload = orjson.dumps(body())
    sock = await raw_connect(gw)
    try:
        await asyncio.get_running_loop().sock_sendall(
            sock, http_request("/v1/messages", payload[:10], declared=len(payload))
        )
        await asyncio.sleep(0.2)
        status, _, raw, took = await send(gw, body())
        assert status == 529
        assert error_of(raw)["type"] == "overloaded_error"
        assert took < 1.0
    finally:
        sock.close()
    for _ in range(100):
        if gw.app[IN_FLIGHT].receiving == 0:
            break
        await asyncio.sleep(0.02)
    await assert_next_request_ok(gw, upstream)


# ---------------------------------------------------------------------------------------------
# Item 11: memory and event-loop time per request


def tiny_blocks(n: int) -> bytes:
    block = b'{"type":"text","text":"a"},'
    return (
        b'{"model":"claude-sonnet-5-5","max_tokens":50,"messages":[{"role":"user","content":['
        + block * (n - 1)
        + b'{"type":"text","text":"a"}]}]}'
    )


async def test_a_body_of_a_million_tiny_blocks_is_refused_before_decoding(
    make_gateway: GatewayFactory, upstream: Upstream, log_lines: list[str]
) -> None:
    gw = await make_gateway()
    payload = tiny_blocks(1_240_000)
    assert len(payload) < 32 * 1024 * 1024
    stalls: list[float] = []

    async def probe(s: aiohttp.ClientSession) -> None:
        # the loop keeps answering health checks while the big body is handled
        for _ in range(20):
            t0 = time.monotonic()
            async with s.get(gw.make_url("/healthz")) as r:
                assert r.status == 200
            stalls.append(time.monotonic() - t0)
            await asyncio.sleep(0.01)

    async with aiohttp.ClientSession() as s:
        prober = asyncio.create_task(probe(s))
        status, _, raw, _ = await send(gw, payload)
        await prober
    assert status == 400
    err = error_of(raw)
    assert err["type"] == "invalid_request_error"
    assert "1000000" in err["message"] and "max_json_values" in err["message"]
    assert max(stalls) < 0.25
    assert upstream.mock.requests == []
    await assert_next_request_ok(gw, upstream)


async def test_more_messages_than_anthropic_allows_is_400(
    gateway: TestServer, upstream: Upstream
) -> None:
    payload = body()
    payload["messages"] = [{"role": "user", "content": "a"}] * 100_001
    status, _, raw, _ = await send(gateway, payload)
    assert status == 400
    err = error_of(raw)
    assert err["type"] == "invalid_request_error"
    assert "messages" in err["message"] and "100000" in err["message"]
    assert upstream.mock.requests == []


@pytest.mark.parametrize("limit", [1000])
async def test_max_json_values_is_configurable(
    make_gateway: GatewayFactory, upstream: Upstream, limit: int
) -> None:
    gw = await make_gateway(server={"max_json_values": limit})
    status, _, raw, _ = await send(gw, tiny_blocks(limit + 1))
    assert status == 400
    assert str(limit) in error_of(raw)["message"]
    await assert_next_request_ok(gw, upstream)
