"""Named keys, reloads and revocation, per-key limits and budgets (issue 17 items 1-2, 5):
through the gateway over real sockets, the mock upstream answering."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.accounts.keyfile import KeyFile, hash_key, load, save
from gateway.mock_upstream import Script, Text
from tests.accounts.conftest import ASK, KeysGateway, entry, get, key_of, post
from tests.conftest import GatewayFactory, Upstream


def summaries(log_lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(x) for x in log_lines if '"request_end"' in x]


async def metric(gw: TestServer, name: str) -> list[str]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(gw.make_url("/metrics"), headers={"x-api-key": key_of("admin")}) as r,
    ):
        return [x for x in (await r.text()).splitlines() if x.startswith(name)]


async def eventually(check: Any, within: float = 3.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polling what a reload changes
            await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# Keys


async def test_named_and_anonymous_keys(keys_gateway: KeysGateway, log_lines: list[str]) -> None:
    gw = await keys_gateway(entry("alice"), entry("admin", admin=True),
                            env={"GATEWAY_API_KEYS": "sk-anon-1"})  # fmt: skip
    assert (await post(gw, key_of("alice")))[0] == 200
    assert (await post(gw, "sk-anon-1"))[0] == 200
    status, _, body = await post(gw, "sk-wrong")
    assert (status, body["error"]["type"]) == (401, "authentication_error")
    assert [(s.get("key_name"), s["status"]) for s in summaries(log_lines)] == [
        ("alice", 200), ("anonymous", 200), (None, 401)]  # fmt: skip
    assert not any(key_of("alice") in line or hash_key(key_of("alice")) in line
                   for line in log_lines)  # fmt: skip
    assert await metric(gw, "gateway_key_requests_total") == [
        'gateway_key_requests_total{key="alice",status="200"} 1.0',
        'gateway_key_requests_total{key="anonymous",status="200"} 1.0',
    ]


async def test_a_keys_file_with_no_key_lets_nobody_in(keys_gateway: KeysGateway) -> None:
    gw = await keys_gateway()
    assert (await post(gw, "anything"))[0] == 401


async def test_reload_on_change_revokes_and_adds(
    keys_gateway: KeysGateway, keys_file: Path, log_lines: list[str]
) -> None:
    gw = await keys_gateway(entry("alice"))
    assert (await post(gw, key_of("alice")))[0] == 200
    doc = load(keys_file)
    doc.keys[0].disabled = True
    doc.keys.append(entry("bob"))
    save(keys_file, doc)
    t0 = time.monotonic()

    async def revoked() -> bool:
        return (await post(gw, key_of("alice")))[0] == 401

    await eventually(revoked)
    assert time.monotonic() - t0 < 2.0  # "within seconds": reload_interval is 0.05 s here
    assert (await post(gw, key_of("bob")))[0] == 200
    # a broken file keeps the keys in force and says why
    keys_file.write_text("{not json")  # noqa: ASYNC240 - a test's small file

    async def complained() -> bool:
        return any("keys_reload_failed" in x for x in log_lines)

    await eventually(complained)
    assert (await post(gw, key_of("bob")))[0] == 200


async def test_sighup_reloads_at_once(keys_gateway: KeysGateway, keys_file: Path) -> None:
    from gateway.keys import ACCOUNTS

    gw = await keys_gateway(entry("alice"), accounts={"reload_interval": 3600})
    save(keys_file, KeyFile(keys=[entry("bob")]))
    assert (await post(gw, key_of("bob")))[0] == 401  # not looked at yet
    gw.app[ACCOUNTS].reload_if_configured()  # what serve() runs on SIGHUP
    assert (await post(gw, key_of("bob")))[0] == 200
    assert (await post(gw, key_of("alice")))[0] == 401


async def test_a_key_may_be_kept_to_some_models(keys_gateway: KeysGateway) -> None:
    gw = await keys_gateway(entry("alice", models=["*haiku*"]))
    status, _, body = await post(gw, key_of("alice"))
    assert (status, body["error"]["type"]) == (403, "permission_error")
    assert body["error"]["message"] == (
        "key 'alice' may not use model 'claude-sonnet-5-5' (keys file: models)")  # fmt: skip
    assert (await post(gw, key_of("alice"), {**ASK, "model": "claude-haiku-5-5"}))[0] == 200
    count = {"model": "claude-opus-5-5", "messages": ASK["messages"]}
    assert (await post(gw, key_of("alice"), count, "/v1/messages/count_tokens"))[0] == 403


# ---------------------------------------------------------------------------------------------
# Limits


async def test_requests_per_minute(keys_gateway: KeysGateway) -> None:
    gw = await keys_gateway(entry("alice", rpm=2), entry("admin", admin=True))
    for _ in range(2):
        assert (await post(gw, key_of("alice")))[0] == 200
    status, headers, body = await post(gw, key_of("alice"))
    assert (status, body["error"]["type"]) == (429, "rate_limit_error")
    assert body["error"]["message"] == (
        "key 'alice' sent 2 requests in the last minute, its limit (rpm = 2)")  # fmt: skip
    assert 59 <= int(headers["retry-after"]) <= 60
    assert "x-should-retry" not in headers  # waiting fixes it
    assert (await post(gw, key_of("admin")))[0] == 200  # another key is not affected
    assert await metric(gw, "gateway_key_limited_total") == [
        'gateway_key_limited_total{key="alice",limit="rpm"} 1.0'
    ]


async def test_a_burst_is_cut_at_the_limit(keys_gateway: KeysGateway) -> None:
    gw = await keys_gateway(entry("alice", rpm=5))
    results = await asyncio.gather(*(post(gw, key_of("alice")) for _ in range(8)))
    assert sorted(r[0] for r in results) == [200] * 5 + [429] * 3


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_concurrent_requests(
    keys_gateway: KeysGateway, upstream: Upstream, stream: bool
) -> None:
    gw = await keys_gateway(entry("alice", concurrent=1))
    upstream.mock.enqueue(Script(items=[Text("slow answer here")], delay_before_headers=0.3,
                                 delay_between_events=0.1))  # fmt: skip
    first = asyncio.create_task(post(gw, key_of("alice"), {**ASK, "stream": stream}))
    async with asyncio.timeout(5):
        while not upstream.mock.requests:  # noqa: ASYNC110 - the first is in flight
            await asyncio.sleep(0.01)
    status, headers, body = await post(gw, key_of("alice"))
    assert (status, headers["retry-after"]) == (429, "1")
    assert "concurrent = 1" in body["error"]["message"]
    assert (await first)[0] == 200
    assert (await post(gw, key_of("alice")))[0] == 200  # the slot came back when it ended


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_tokens_per_minute_count_the_real_usage(
    keys_gateway: KeysGateway, upstream: Upstream, stream: bool
) -> None:
    gw = await keys_gateway(entry("alice", tpm=90))
    upstream.mock.enqueue(Script(items=[Text("ok")], usage={"input_tokens": 50,
                                                            "output_tokens": 20}))  # fmt: skip
    assert (await post(gw, key_of("alice"), {**ASK, "stream": stream}))[0] == 200
    # 70 tokens used; this request's estimate (its ~110-byte body / 4) would pass 90
    status, headers, body = await post(gw, key_of("alice"))
    assert status == 429
    assert body["error"]["message"].startswith(
        "key 'alice' used 70 tokens in the last minute and this request needs about "
    )
    assert 58 <= int(headers["retry-after"]) <= 60


# ---------------------------------------------------------------------------------------------
# Budgets


def seconds_to_midnight() -> float:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


async def test_a_spent_daily_budget_survives_a_restart(
    make_gateway: GatewayFactory, upstream: Upstream, keys_file: Path, tmp_path: Path
) -> None:
    save(keys_file, KeyFile(keys=[entry("alice", daily_tokens=100)]))
    sections = {"accounts": {"keys_file": str(keys_file)},
                "ledger": {"path": str(tmp_path / "usage.db")}}  # fmt: skip
    gw = await make_gateway(**sections)
    upstream.mock.enqueue(Script(items=[Text("big")], usage={"input_tokens": 80,
                                                             "output_tokens": 30}))  # fmt: skip
    assert (await post(gw, key_of("alice")))[0] == 200
    status, headers, body = await post(gw, key_of("alice"))
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    assert (status, body["error"]["type"]) == (429, "rate_limit_error")
    assert body["error"]["message"] == (
        f"key 'alice' has spent its daily token budget (100); it resets at {tomorrow}"
    )
    assert headers["x-should-retry"] == "false"
    assert abs(int(headers["retry-after"]) - seconds_to_midnight()) < 5
    await gw.close()  # the ledger is flushed on shutdown
    again = await make_gateway(**sections)
    status, _, _ = await post(again, key_of("alice"))
    assert status == 429  # the spend came back from the ledger


async def test_a_cost_budget_from_the_price_table(
    keys_gateway: KeysGateway, upstream: Upstream
) -> None:
    gw = await keys_gateway(
        entry("alice", daily_cost=1.0), entry("admin", admin=True),
        prices={"gpt-5": {"input": 1.0, "output": 2.0}},
    )  # fmt: skip
    upstream.mock.enqueue(Script(items=[Text("x")], usage={"input_tokens": 500_000,
                                                           "output_tokens": 250_000}))  # fmt: skip
    assert (await post(gw, key_of("alice")))[0] == 200
    status, _, body = await post(gw, key_of("alice"))
    assert status == 429 and "daily cost budget (1)" in body["error"]["message"]
    _, usage = await get(gw, "/v1/admin/usage?by=key&since=1h", key_of("admin"))
    alice = next(r for r in usage["data"] if r["key"] == "alice")
    assert (alice["requests"], alice["errors"], alice["cost"]) == (2, 1, 1.0)
    assert await metric(gw, "gateway_key_cost_total") == ['gateway_key_cost_total{key="alice"} 1.0']


def test_day_and_month_is_right_across_midnights_and_jumps_back() -> None:
    # the answer for one UTC day is remembered (issue 19): every boundary, and a clock that
    # goes back, must still give the date of the timestamp asked about
    from datetime import UTC, datetime

    from gateway.accounts.limits import day_and_month

    midnight = datetime(2026, 12, 31, tzinfo=UTC).timestamp()
    for t in (midnight - 0.001, midnight, midnight + 86399.999, midnight + 86400.0,
              midnight - 0.001, 0.0, midnight + 86400.0 * 400):  # fmt: skip
        d = datetime.fromtimestamp(t, UTC)
        assert day_and_month(t) == (d.strftime("%Y-%m-%d"), d.strftime("%Y-%m"))
    assert day_and_month(midnight - 0.001) == ("2026-12-30", "2026-12")
    assert day_and_month(midnight + 86400.0) == ("2027-01-01", "2027-01")
