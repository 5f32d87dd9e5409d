"""A fleet's shared state in a real Redis (issue 18 item 1): two gateways in this process,
one redis-server of the test's own. Limits hold across the fleet, a count_tokens burst reaches
the upstream once, a circuit one gateway opens spares the other, a revocation reaches every
gateway at once, and Redis going away costs nothing but the sharing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from gateway.accounts.keyfile import KeyFile, save
from gateway.mock_upstream import Script, Text
from tests.accounts.conftest import ASK, entry, key_of, post
from tests.conftest import GatewayFactory, Upstream
from tests.failover.conftest import dead_url
from tests.fleet.conftest import RedisServer


async def fleet(make_gateway: GatewayFactory, redis: RedisServer, keys: Path,
                n: int = 2, **sections: Any) -> list[TestServer]:  # fmt: skip
    shared = {"url": redis.url, "retry_interval": 0.1, "timeout": 0.5}
    accounts = {"keys_file": str(keys), **sections.pop("accounts", {})}
    return [await make_gateway(redis=shared, accounts=accounts, **sections) for _ in range(n)]


async def until(check: Any, within: float = 5.0) -> None:
    """Poll ``check`` (bounded: a test never hangs)."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polling what another process changes
            await asyncio.sleep(0.02)


async def readyz(gw: TestServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(gw.make_url("/readyz")) as r:
        assert r.status == 200  # Redis down is never "not ready"
        doc: dict[str, Any] = await r.json()
        return doc


async def test_a_key_limit_holds_across_the_fleet(
    make_gateway: GatewayFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    save(keys, KeyFile(keys=[entry("alice", rpm=4)]))
    a, b = await fleet(make_gateway, redis_server, keys)
    got = [(await post(gw, key_of("alice")))[0] for gw in (a, b, a, b, a, b)]
    assert got == [200, 200, 200, 200, 429, 429]  # 4 in the fleet, not 4 per gateway
    _, headers, body = await post(b, key_of("alice"))
    assert body["error"]["message"] == (
        "key 'alice' sent 4 requests in the last minute, its limit (rpm = 4)")  # fmt: skip
    assert 58 <= int(headers["retry-after"]) <= 60


async def test_concurrency_and_tokens_across_the_fleet(
    make_gateway: GatewayFactory, upstream: Upstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    save(keys, KeyFile(keys=[entry("alice", concurrent=1, tpm=90)]))
    a, b = await fleet(make_gateway, redis_server, keys)
    upstream.mock.enqueue(Script(items=[Text("slow")], delay_before_headers=0.3,
                                 usage={"input_tokens": 50, "output_tokens": 20}))  # fmt: skip
    first = asyncio.create_task(post(a, key_of("alice")))
    async with asyncio.timeout(5):
        while not upstream.mock.requests:  # noqa: ASYNC110 - the first is in flight
            await asyncio.sleep(0.01)
    status, _, body = await post(b, key_of("alice"))
    assert (status, "concurrent = 1" in body["error"]["message"]) == (429, True)
    assert (await first)[0] == 200
    await asyncio.sleep(0.1)  # the settle (real usage 70) reaches Redis off the request path
    status, _, body = await post(b, key_of("alice"))
    assert status == 429
    assert body["error"]["message"].startswith("key 'alice' used 70 tokens in the last minute")


async def test_a_count_tokens_burst_reaches_the_upstream_once(
    make_gateway: GatewayFactory, upstream: Upstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    save(keys, KeyFile(keys=[entry("alice")]))
    gateways = await fleet(make_gateway, redis_server, keys, n=3)
    doc = {"model": "claude-sonnet-5-5", "messages": [{"role": "user", "content": "count me"}]}
    upstream.mock.input_tokens_delay = 0.2  # the first count is slow: the others wait for it
    results = await asyncio.gather(*(
        post(gateways[i % 3], key_of("alice"), doc, "/v1/messages/count_tokens")
        for i in range(12)
    ))  # fmt: skip
    assert {r[0] for r in results} == {200}
    assert len({r[2]["input_tokens"] for r in results}) == 1
    counted = [r for r in upstream.mock.requests if r.path == "/v1/responses/input_tokens"]
    assert len(counted) == 1


async def test_a_circuit_opened_by_one_gateway_spares_the_other(
    make_gateway: GatewayFactory, upstream: Upstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    save(keys, KeyFile(keys=[entry("alice")]))
    routes = [{"match": ["*"], "model": "gpt-5", "upstream": "down",
               "fallbacks": [{"upstream": "default", "model": "gpt-5"}]}]  # fmt: skip
    ups = {"down": {"base_url": dead_url(), "api_key_env": "TEST_UPSTREAM_KEY"},
           "default": {"base_url": upstream.url, "api_key_env": "TEST_UPSTREAM_KEY"}}  # fmt: skip
    a, b = await fleet(make_gateway, redis_server, keys, routes=routes, upstreams=ups,
                       fallback={"breaker_failures": 1, "breaker_cooldown": 30})  # fmt: skip
    assert (await post(a, key_of("alice")))[0] == 200  # a: connect refused, then the fallback

    async def opened() -> bool:
        return bool((await readyz(b))["targets"]["down:gpt-5"]["circuit"] == "open")

    await until(opened)
    assert (await readyz(b))["targets"]["down:gpt-5"]["retry_in"] > 25


async def test_a_revocation_reaches_every_gateway(
    make_gateway: GatewayFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    save(keys, KeyFile(keys=[entry("alice"), entry("bob")]))
    a, b = await fleet(make_gateway, redis_server, keys, accounts={"reload_interval": 3600})
    copy = tmp_path / "copy-not-yet-updated.json"  # what a gateway elsewhere still reads
    copy.write_bytes(keys.read_bytes())
    revoked = subprocess.run(  # noqa: ASYNC221 - the command line, as an operator runs it
        [sys.executable, "-m", "gateway", "keys", "--file", str(keys), "revoke", "alice"],
        capture_output=True, text=True, timeout=30,
        env={"PATH": os.environ.get("PATH", ""), "GATEWAY_REDIS_URL": redis_server.url},
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked across the fleet (Redis)" in revoked.stderr

    async def refused() -> bool:
        return (await post(b, key_of("alice")))[0] == 401

    await until(refused)
    assert (await post(a, key_of("alice")))[0] == 401
    assert (await post(a, key_of("bob")))[0] == 200
    # a gateway started later learns it from Redis, whatever its file says
    later = await make_gateway(redis={"url": redis_server.url},
                               accounts={"keys_file": str(copy)})  # fmt: skip
    assert (await post(later, key_of("alice")))[0] == 401


async def test_redis_going_away_costs_only_the_sharing(
    make_gateway: GatewayFactory, redis_server: RedisServer, tmp_path: Path,
    log_lines: list[str],
) -> None:  # fmt: skip
    keys = tmp_path / "keys.json"
    save(keys, KeyFile(keys=[entry("alice", rpm=1000, concurrent=10)]))
    (a,) = await fleet(make_gateway, redis_server, keys, n=1)
    assert (await readyz(a))["redis"] == {"configured": True, "up": True}
    redis_server.stop()
    for _ in range(5):
        assert (await post(a, key_of("alice")))[0] == 200  # never a 5xx
    doc = (await readyz(a))["redis"]
    assert doc["up"] is False and doc["fallback"].startswith("local state")
    assert any('"redis_down"' in x for x in log_lines)
    async with (
        aiohttp.ClientSession() as s,
        s.get(a.make_url("/metrics"), headers={"x-api-key": key_of("alice")}) as r,
    ):
        text = await r.text()  # fmt: skip
    assert f'gateway_redis_up{{redis="127.0.0.1:{redis_server.port}"}} 0.0' in text
    redis_server.start()

    async def back() -> bool:
        return bool((await readyz(a))["redis"]["up"])

    await until(back)
    assert (await post(a, key_of("alice")))[0] == 200
    assert any('"redis_up"' in x for x in log_lines)


async def test_redis_down_at_start_is_not_a_failed_start(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    save(keys, KeyFile(keys=[entry("alice", rpm=10)]))
    gw = await make_gateway(redis={"url": "redis://127.0.0.1:1/0", "timeout": 0.2},
                            accounts={"keys_file": str(keys)})  # fmt: skip
    assert (await post(gw, key_of("alice"), ASK))[0] == 200
    assert json.dumps((await readyz(gw))["redis"]["up"]) == "false"


async def test_health_probes_log_at_debug(gateway: TestServer, log_lines: list[str]) -> None:
    """Kubernetes probes every few seconds per pod: passing ones must not flood info logs."""
    async with aiohttp.ClientSession() as s:
        for path in ("/healthz", "/readyz"):
            async with s.get(gateway.make_url(path)) as r:
                assert r.status == 200
    lines = [json.loads(x) for x in log_lines if x.startswith("{") and '"request_' in x]
    assert [(x["event"], x["level"]) for x in lines] == [("request_start", "debug"),
                                                        ("request_end", "debug")] * 2  # fmt: skip


async def test_a_place_taken_before_redis_went_away_comes_back_with_it(
    make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path
) -> None:
    """A request admitted by Redis that ends while Redis is down frees its place in the fleet
    once Redis is back (not 15 minutes later)."""
    redis_server = RedisServer(persistent=True)  # killed and restarted with its data
    redis_server.start()
    try:
        await _place_comes_back(make_gateway, upstream, redis_server, tmp_path)
    finally:
        redis_server.stop()


async def _place_comes_back(
    make_gateway: GatewayFactory, upstream: Upstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    save(keys, KeyFile(keys=[entry("alice", concurrent=1)]))
    (gw,) = await fleet(make_gateway, redis_server, keys, n=1)
    upstream.mock.enqueue(Script(items=[Text("slow")], delay_before_headers=0.4))
    first = asyncio.create_task(post(gw, key_of("alice")))

    async def sent() -> bool:
        return bool(upstream.mock.requests)

    await until(sent)
    redis_server.stop()  # killed while the request runs: its settle cannot reach Redis
    assert (await first)[0] == 200
    redis_server.start()  # back with its data (an empty Redis would hide a leaked place)

    async def back() -> bool:
        return bool((await readyz(gw))["redis"]["up"])

    await until(back)
    await asyncio.sleep(0.2)  # the replayed settle, off the request path
    assert (await post(gw, key_of("alice")))[0] == 200
