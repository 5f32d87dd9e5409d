"""Key pools, circuit breakers and per-upstream concurrency limits (issue 16 items 2-4, 6),
through the gateway over real sockets with mock upstreams, and the settings that make them."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.config import load_settings
from gateway.failover.breaker import Breaker, Limiter
from gateway.failover.keys import KeyPool, PoolKey
from gateway.mock_upstream import Script, Text
from gateway.settings import Secret, SettingsError
from gateway.startup import StartupError, describe, resolve_startup
from tests.conftest import Upstream
from tests.failover.conftest import CLIENT_MODEL, ChainFactory
from tests.failover.test_chain import ASK, metric_lines, post, summary

POOL = {"api_key_env": "", "api_key_envs": ["KEY_A", "KEY_B", "KEY_C"]}
KEYS = {"KEY_A": "sk-pool-A-CANARY", "KEY_B": "sk-pool-B-CANARY", "KEY_C": "sk-pool-C-CANARY"}


def used_keys(upstream: Upstream) -> list[str]:
    return [r.headers["Authorization"].removeprefix("Bearer sk-pool-")[0]
            for r in upstream.mock.requests]  # fmt: skip


async def arrived(upstream: Upstream) -> None:
    """Until the upstream has received a request (bounded: a test never hangs)."""
    async with asyncio.timeout(5):
        while not upstream.mock.requests:  # noqa: ASYNC110 - polling a recorder
            await asyncio.sleep(0.01)


async def readyz(gw: TestServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(gw.make_url("/readyz")) as r:
        assert r.status == 200
        doc: dict[str, Any] = await r.json()
        return doc


# ---------------------------------------------------------------------------------------------
# Key pools


async def test_a_rate_limited_key_cools_and_the_others_serve(
    chain_gateway: ChainFactory, mocks: list[Upstream], log_lines: list[str]
) -> None:
    gw = await chain_gateway(upstreams={"u0": POOL}, env=KEYS)
    mocks[0].mock.enqueue(Script(status=429, headers={"retry-after": "30"}),
                          *[Script(items=[Text("ok")])] * 3)  # fmt: skip
    for _ in range(3):
        status, _, _ = await post(gw, ASK)
        assert status == 200
    # A got 429 and cools for 30 s: B answered at once, then C, then B again (A still cooling)
    assert used_keys(mocks[0]) == ["A", "B", "C", "B"]
    assert mocks[1].mock.requests == []  # nothing fell over: the pool absorbed it
    assert (await readyz(gw))["upstreams"]["u0"] == {
        "keys": 3, "available": 2, "cooling": 1, "disabled": 0, "in_flight": 0}  # fmt: skip
    cooling = [json.loads(x) for x in log_lines if "upstream_key_cooling" in x]
    assert [(c["upstream"], c["key_source"], c["seconds"]) for c in cooling] == [
        ("u0", "KEY_A", 30.0)]  # fmt: skip
    assert await metric_lines(gw, "gateway_upstream_key_events_total") == [
        'gateway_upstream_key_events_total{event="rate_limited",upstream="u0"} 1.0'
    ]
    assert not any("CANARY" in line for line in log_lines)


async def test_a_refused_key_leaves_the_pool_loudly(
    chain_gateway: ChainFactory, mocks: list[Upstream], log_lines: list[str]
) -> None:
    gw = await chain_gateway(upstreams={"u0": POOL}, env=KEYS)
    mocks[0].mock.enqueue(Script(status=401, error_code="invalid_api_key"),
                          *[Script(items=[Text("ok")])] * 3)  # fmt: skip
    for _ in range(3):
        assert (await post(gw, ASK))[0] == 200
    assert used_keys(mocks[0]) == ["A", "B", "C", "B"]
    [line] = [json.loads(x) for x in log_lines if "upstream_key_disabled" in x]
    assert (line["level"], line["upstream"], line["key_source"], line["keys_left"]) == (
        "error", "u0", "KEY_A", 2)  # fmt: skip
    assert (await readyz(gw))["upstreams"]["u0"]["disabled"] == 1
    assert not any("CANARY" in x for x in log_lines)


async def test_every_key_cooling_skips_the_target_at_no_cost(
    chain_gateway: ChainFactory, mocks: list[Upstream], log_lines: list[str]
) -> None:
    pool = {"api_key_env": "", "api_key_envs": ["KEY_A", "KEY_B"]}
    gw = await chain_gateway(upstreams={"u0": pool}, env=KEYS)
    limited = Script(status=429, headers={"retry-after": "30"})
    mocks[0].mock.enqueue(limited, limited)
    mocks[1].mock.enqueue(Script(items=[Text("one")]), Script(items=[Text("two")]))
    assert (await post(gw, ASK))[0] == 200
    assert used_keys(mocks[0]) == ["A", "B"]
    log_lines.clear()
    assert (await post(gw, ASK))[0] == 200
    assert len(mocks[0].mock.requests) == 2  # the second request never reached u0
    line = summary(log_lines)
    assert (line["target"], line["skipped"], line["fallbacks"]) == (
        "u1:model-b", 1, "u0:model-a:rate_limit")  # fmt: skip


async def test_a_lone_pool_that_is_cooling_answers_429_with_its_wait(
    chain_gateway: ChainFactory, mocks: list[Upstream]
) -> None:
    pool = {"api_key_env": "", "api_key_envs": ["KEY_A", "KEY_B"]}
    gw = await chain_gateway(upstreams={"u0": pool}, env=KEYS, route={"fallbacks": []})
    limited = Script(status=429, headers={"retry-after": "30"})
    mocks[0].mock.enqueue(limited, limited)
    status, headers, answer = await post(gw, ASK)
    assert (status, answer["error"]["type"]) == (429, "rate_limit_error")
    status, headers, answer = await post(gw, ASK)  # no upstream call: both keys cool
    assert status == 429 and len(mocks[0].mock.requests) == 2
    assert answer["error"]["message"].startswith("every key of upstream 'u0' is rate-limited")
    assert 29 <= int(headers["retry-after"]) <= 30


def test_least_limited_prefers_the_key_limited_longest_ago() -> None:
    now = [100.0]
    pool = KeyPool("u", [PoolKey(n, Secret(n)) for n in "ABC"], "least_limited", lambda: now[0])
    pool.cool(0, 1.0)
    now[0] = 101.0
    pool.cool(1, 1.0)
    now[0] = 102.5  # both usable again; C never limited, then A (limited first)
    assert [pool.pick() for _ in range(3)] == [2, 2, 2]
    pool.keys[2].disabled = "HTTP 401"
    assert pool.pick() == 0


# ---------------------------------------------------------------------------------------------
# Circuit breakers


async def test_an_open_circuit_is_skipped_and_the_primary_comes_back(
    chain_gateway: ChainFactory, mocks: list[Upstream], log_lines: list[str]
) -> None:
    gw = await chain_gateway(fallback={"breaker_failures": 2, "breaker_cooldown": 0.4})
    mocks[0].mock.enqueue(Script(status=503), Script(status=503))
    mocks[1].mock.enqueue(*[Script(items=[Text("second")])] * 3)
    for _ in range(2):
        assert (await post(gw, ASK))[0] == 200
    assert (await readyz(gw))["targets"]["u0:model-a"]["circuit"] == "open"
    assert await metric_lines(gw, "gateway_upstream_circuit_state") == [
        'gateway_upstream_circuit_state{target="u0:model-a"} 2.0',
        'gateway_upstream_circuit_state{target="u1:model-b"} 0.0',
        'gateway_upstream_circuit_state{target="u2:model-c"} 0.0',
    ]
    log_lines.clear()
    assert (await post(gw, ASK))[0] == 200
    assert len(mocks[0].mock.requests) == 2  # skipped: no connection, no request
    line = summary(log_lines)
    assert (line["skipped"], line["fallbacks"]) == (1, "u0:model-a:circuit_open")

    await asyncio.sleep(0.45)  # the cool-down ends: one real request probes u0
    mocks[0].mock.enqueue(Script(items=[Text("primary again")]))
    status, _, answer = await post(gw, ASK)
    assert (status, answer["content"][0]["text"]) == (200, "primary again")
    assert (await readyz(gw))["targets"]["u0:model-a"] == {"circuit": "closed", "failures": 0}


def test_half_open_lets_one_probe_through_and_a_failed_probe_reopens() -> None:
    now = [0.0]
    b = Breaker("t", threshold=1, cooldown=10.0, clock=lambda: now[0])
    b.failure()
    assert (b.state, b.allow()) == ("open", False)
    now[0] = 10.0
    assert b.allow() is True and b.state == "half_open"
    assert b.allow() is False  # the probe is out; everyone else skips
    b.failure()
    assert (b.state, b.retry_in()) == ("open", 10.0)
    now[0] = 20.0
    assert b.allow() is True
    b.release()  # a probe that was cancelled: the next request probes
    assert b.allow() is True
    b.success()
    assert (b.state, b.allow(), b.allow()) == ("closed", True, True)


async def test_all_circuits_open_is_a_529_at_once(
    chain_gateway: ChainFactory, mocks: list[Upstream]
) -> None:
    gw = await chain_gateway(
        route={"fallbacks": []}, fallback={"breaker_failures": 1, "breaker_cooldown": 30}
    )
    mocks[0].mock.enqueue(Script(status=500))
    assert (await post(gw, ASK))[0] == 500
    status, headers, answer = await post(gw, ASK)
    assert (status, answer["error"]["type"]) == (529, "overloaded_error")
    assert answer["error"]["message"].startswith(
        "no target of route 'u0:model-a' can take the request now: u0:model-a: skipped, "
        "circuit open for "
    )
    assert 29 <= int(headers["retry-after"]) <= 30
    assert len(mocks[0].mock.requests) == 1


# ---------------------------------------------------------------------------------------------
# Concurrency per upstream


async def test_a_busy_upstream_sends_the_next_request_on(
    chain_gateway: ChainFactory, mocks: list[Upstream], log_lines: list[str]
) -> None:
    gw = await chain_gateway(upstreams={"u0": {"max_concurrency": 1, "queue_timeout": 0.05}})
    mocks[0].mock.enqueue(Script(items=[Text("slow")], delay_between_events=0.1))
    mocks[1].mock.enqueue(Script(items=[Text("elsewhere")]))
    slow = asyncio.create_task(post(gw, {**ASK, "stream": True}))
    await arrived(mocks[0])
    assert (await readyz(gw))["upstreams"]["u0"]["in_flight"] == 1
    status, _, answer = await post(gw, ASK)
    assert (status, answer["content"][0]["text"]) == (200, "elsewhere")
    assert (await slow)[0] == 200
    ends = [json.loads(x) for x in log_lines if '"request_end"' in x]
    [moved] = [e for e in ends if e.get("target") == "u1:model-b"]
    assert (moved["skipped"], moved["fallbacks"]) == (1, "u0:model-a:busy")
    assert (await readyz(gw))["upstreams"]["u0"]["in_flight"] == 0


async def test_a_queued_request_gets_the_slot_when_it_frees(
    chain_gateway: ChainFactory, mocks: list[Upstream]
) -> None:
    gw = await chain_gateway(
        route={"fallbacks": []}, upstreams={"u0": {"max_concurrency": 1, "queue_timeout": 5}}
    )
    mocks[0].mock.enqueue(Script(items=[Text("first")], delay_before_headers=0.2),
                          Script(items=[Text("second")]))  # fmt: skip
    first = asyncio.create_task(post(gw, ASK))
    await arrived(mocks[0])
    second = await post(gw, ASK)
    assert [(await first)[2]["content"][0]["text"], second[2]["content"][0]["text"]] == [
        "first", "second"]  # fmt: skip


async def test_a_full_lone_upstream_is_a_529(
    chain_gateway: ChainFactory, mocks: list[Upstream]
) -> None:
    gw = await chain_gateway(
        route={"fallbacks": []}, upstreams={"u0": {"max_concurrency": 1, "queue_timeout": 0.05}}
    )
    mocks[0].mock.enqueue(Script(items=[Text("slow")], delay_before_headers=0.5))
    slow = asyncio.create_task(post(gw, ASK))
    await arrived(mocks[0])
    status, _, answer = await post(gw, ASK)
    assert (status, answer["error"]["type"]) == (529, "overloaded_error")
    assert "u0:model-a: skipped, 1 requests in flight (max_concurrency)" in answer["error"][
        "message"]  # fmt: skip
    assert (await slow)[0] == 200


async def test_the_limiter_hands_slots_over_in_order() -> None:
    lim = Limiter(1)
    assert await lim.acquire(0)
    waiting = [asyncio.create_task(lim.acquire(1.0)) for _ in range(2)]
    await asyncio.sleep(0)
    assert await lim.acquire(0) is False  # no queue-jumping
    lim.release()
    assert await waiting[0] is True and not waiting[1].done()
    lim.release()
    assert await waiting[1] is True
    lim.release()
    assert lim.active == 0
    cancelled = asyncio.create_task(lim.acquire(1.0))
    assert await lim.acquire(0)
    await asyncio.sleep(0)
    cancelled.cancel()
    lim.release()
    assert lim.active == 0


# ---------------------------------------------------------------------------------------------
# Settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


CHAIN_TOML = """
[upstreams.default]
api_key_env = ""
api_key_envs = ["KEY_A", "KEY_B"]
max_concurrency = 8

[upstreams.local]
base_url = "http://127.0.0.1:8000/v1"
dialect = "chat"
api_key_env = ""

[[routes]]
match = ["*"]
model = "big"
fallback_on_overflow = true

[[routes.fallbacks]]
upstream = "local"
model = "Qwen/Qwen3-8B"
reasoning = false
max_output_tokens = 8192
"""


def test_a_chain_in_toml_and_check_config(tmp_path: Path) -> None:
    startup = resolve_startup(KEYS, config=str(write(tmp_path, CHAIN_TOML)))
    report = describe(startup)
    assert "route * -> default:gpt-5 (responses, https://api.openai.com/v1)" in report
    assert "  then local:Qwen/Qwen3-8B (chat, http://127.0.0.1:8000/v1)" in report
    assert ("upstream default: https://api.openai.com/v1 (responses, keys from KEY_A, KEY_B "
            "(round_robin), at most 8 at once)") in report  # fmt: skip
    assert not any("CANARY" in line for line in report)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (CHAIN_TOML.replace('upstream = "local"', 'upstream = "nowhere"'),
         "bad setting routes[0].fallbacks[0].upstream = 'nowhere': no such upstream "
         "(defined: default, local)"),
        (CHAIN_TOML.replace('upstream = "local"\nmodel = "Qwen/Qwen3-8B"',
                            'upstream = "default"\nmodel = "big"'),
         "bad setting routes[0].fallbacks[0]: default:big is already in this route's chain"),
        (CHAIN_TOML + "\n[fallback]\nmax_targets = 0\n", "max_targets"),
        (CHAIN_TOML.replace("max_concurrency = 8", "max_concurrency = -1"), "max_concurrency"),
        (CHAIN_TOML.replace('model = "Qwen/Qwen3-8B"', 'model = "q"\nmatch = ["x"]'), "match"),
    ],
)  # fmt: skip
def test_bad_chain_settings_stop_start_up(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings(write(tmp_path, text), env={})


def test_key_sources_fail_closed(tmp_path: Path) -> None:
    path = str(write(tmp_path, CHAIN_TOML))
    with pytest.raises(StartupError, match=r"upstreams\.default\.api_key_envs: KEY_B is not set"):
        resolve_startup({"KEY_A": "a"}, config=path)
    keys_file = tmp_path / "keys.txt"
    text = CHAIN_TOML.replace('api_key_envs = ["KEY_A", "KEY_B"]',
                              f'api_keys_file = "{keys_file}"')  # fmt: skip
    path = str(write(tmp_path, text))
    with pytest.raises(StartupError, match=r"cannot be read: No such file or directory"):
        resolve_startup({}, config=path)
    keys_file.write_text("# only a comment\n")
    with pytest.raises(StartupError, match="holds no key"):
        resolve_startup({}, config=path)
    keys_file.write_text("# two keys\nsk-file-1\n\nsk-file-2\n")
    assert resolve_startup({}, config=path).settings.upstreams["default"].api_keys_file


async def test_a_pool_from_a_file(
    chain_gateway: ChainFactory, mocks: list[Upstream], tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("sk-pool-X\n# retired: sk-pool-Z\nsk-pool-Y\n")
    gw = await chain_gateway(upstreams={"u0": {"api_key_env": "", "api_keys_file": str(keys_file)}})
    for _ in range(3):
        assert (await post(gw, ASK))[0] == 200
    assert used_keys(mocks[0]) == ["X", "Y", "X"]


def test_client_model_constant_is_routed() -> None:
    assert CLIENT_MODEL.startswith("claude-")
