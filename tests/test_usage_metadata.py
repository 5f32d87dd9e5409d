"""Usage and metadata (issue 15 item 5): reasoning tokens, the served tier, fast mode,
``stop_details`` for refusals, the one-hour cache, and input usage in ``message_start`` when
the upstream reports it early — JSON, raw stream and the SDK's accumulation."""

from __future__ import annotations

from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp.test_utils import TestServer

from gateway.mock_upstream import Reasoning, Refusal, Script, Text
from tests.anthropic_grammar import check_stream, parse_frames
from tests.conftest import GatewayFactory, Upstream

MODEL = "claude-sonnet-5-5"
ASK = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


async def post(gw: TestServer, doc: dict[str, Any]) -> Any:
    async with aiohttp.ClientSession() as s, s.post(gw.make_url("/v1/messages"), json=doc) as r:
        assert r.status == 200
        if doc.get("stream"):
            events = parse_frames(await r.read())
            check_stream(events)
            return events
        return await r.json()


def final_delta(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    [delta] = [d for name, d in events if name == "message_delta"]
    return delta


async def gateway_for(make_gateway: GatewayFactory, upstream: Upstream, dialect: str) -> TestServer:
    return await make_gateway(upstreams={"default": {"base_url": upstream.url, "dialect": dialect}})


@pytest.mark.parametrize("dialect", ["responses", "chat"])
async def test_reasoning_tokens_and_the_served_tier(
    make_gateway: GatewayFactory, upstream: Upstream, dialect: str
) -> None:
    gw = await gateway_for(make_gateway, upstream, dialect)
    usage = {"input_tokens": 50, "output_tokens": 30, "reasoning_tokens": 12}
    script = Script(items=[Reasoning(["think"]), Text("ok")], usage=usage)
    upstream.mock.enqueue(script, script)
    answer = await post(gw, ASK)
    assert answer["usage"] == {
        "input_tokens": 50, "output_tokens": 30, "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0, "output_tokens_details": {"thinking_tokens": 12},
        "service_tier": "standard"}  # fmt: skip
    events = await post(gw, {**ASK, "stream": True})
    assert final_delta(events)["usage"] == answer["usage"]
    assert "service_tier" not in events[0][1]["message"]["usage"]  # not known at the start


@pytest.mark.parametrize("dialect", ["responses", "chat"])
async def test_fast_mode_is_the_priority_tier(
    make_gateway: GatewayFactory, upstream: Upstream, dialect: str
) -> None:
    gw = await gateway_for(make_gateway, upstream, dialect)
    upstream.mock.enqueue(Script(items=[Text("quick")]), Script(items=[Text("quick")]))
    answer = await post(gw, {**ASK, "speed": "fast"})
    assert upstream.mock.requests[-1].body["service_tier"] == "priority"
    assert (answer["usage"]["service_tier"], answer["usage"]["speed"]) == ("priority", "fast")
    events = await post(gw, {**ASK, "speed": "fast", "stream": True})
    usage = final_delta(events)["usage"]
    assert (usage["service_tier"], usage["speed"]) == ("priority", "fast")
    # without fast mode: no speed, the standard tier
    upstream.mock.enqueue(Script(items=[Text("slow")]))
    plain = await post(gw, ASK)
    assert "service_tier" not in upstream.mock.requests[-1].body
    assert plain["usage"]["service_tier"] == "standard" and "speed" not in plain["usage"]


REFUSED = {"type": "refusal", "category": None, "explanation": None}


@pytest.mark.parametrize("dialect", ["responses", "chat"])
async def test_a_models_refusal_has_stop_details(
    make_gateway: GatewayFactory, upstream: Upstream, dialect: str
) -> None:
    gw = await gateway_for(make_gateway, upstream, dialect)
    script = Script(items=[Refusal("I can't help with that.")])
    upstream.mock.enqueue(script, script, script)
    answer = await post(gw, ASK)
    assert (answer["stop_reason"], answer["stop_details"]) == ("refusal", REFUSED)
    events = await post(gw, {**ASK, "stream": True})
    assert final_delta(events)["delta"] == {
        "stop_reason": "refusal", "stop_sequence": None, "stop_details": REFUSED}  # fmt: skip
    client = anthropic.AsyncAnthropic(base_url=str(gw.make_url("")), api_key="k", max_retries=0)
    async with client.messages.stream(**ASK) as s:
        final = await s.get_final_message()
    await client.close()
    assert final.stop_details is not None
    assert final.stop_details.model_dump() == REFUSED
    # any other stop has none
    upstream.mock.enqueue(Script(items=[Text("fine")]))
    assert "stop_details" not in await post(gw, ASK)


async def test_a_policy_refusal_says_its_category(gateway: TestServer, upstream: Upstream) -> None:
    policy = Script(items=[Text("Partial")], end="failed", error_code="bio_policy",
                    error_message="This request was flagged by the bio policy.")  # fmt: skip
    upstream.mock.enqueue(policy, policy)
    details = {"type": "refusal", "category": "bio",
               "explanation": "This request was flagged by the bio policy."}  # fmt: skip
    answer = await post(gateway, ASK)
    assert (answer["stop_reason"], answer["stop_details"]) == ("refusal", details)
    events = await post(gateway, {**ASK, "stream": True})
    assert final_delta(events)["delta"]["stop_details"] == details


@pytest.mark.parametrize("dialect", ["responses", "chat"])
async def test_one_hour_cache(
    make_gateway: GatewayFactory, upstream: Upstream, dialect: str
) -> None:
    gw = await gateway_for(make_gateway, upstream, dialect)
    system = [{"type": "text", "text": "Long instructions.",
               "cache_control": {"type": "ephemeral", "ttl": "1h"}}]  # fmt: skip
    upstream.mock.enqueue(Script(items=[Text("a")]), Script(items=[Text("b")]))
    await post(gw, {**ASK, "system": system})
    sent = upstream.mock.requests[-1].body
    # Responses: OpenAI's extended retention; Chat servers are not sent a field they may refuse
    expected = "24h" if dialect == "responses" else None
    assert sent.get("prompt_cache_retention") == expected
    system[0]["cache_control"] = {"type": "ephemeral"}  # the default five minutes
    await post(gw, {**ASK, "system": system})
    assert "prompt_cache_retention" not in upstream.mock.requests[-1].body


async def test_input_usage_reported_early_goes_in_message_start(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await gateway_for(make_gateway, upstream, "chat")
    upstream.mock.enqueue(
        Script(items=[Text("hello")], chat_usage_every_chunk=True, usage={"input_tokens": 321}),
        Script(items=[Text("hello")], usage={"input_tokens": 321}),
    )
    events = await post(gw, {**ASK, "stream": True})
    assert events[0][1]["message"]["usage"]["input_tokens"] == 321
    # only at the end otherwise: message_start has the estimate (0), message_delta the count
    events = await post(gw, {**ASK, "stream": True})
    assert events[0][1]["message"]["usage"]["input_tokens"] == 0
    assert final_delta(events)["usage"]["input_tokens"] == 321
