"""Fallback chains (issue 16 item 1, 5): each failure before the first byte moves the request
to the next target, streamed and not; after the first byte nothing moves; the error once the
chain is spent names every target. Through the gateway over real sockets, the official SDK as
the client and three mock upstreams."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from gateway.anthropic.signatures import Signer
from gateway.mock_upstream import Script, Text
from tests.conftest import SIGNING_KEY, Upstream
from tests.failover.conftest import CLIENT_MODEL, PATHS, ChainFactory, dead_url

ASK = {"model": CLIENT_MODEL, "max_tokens": 100,
       "messages": [{"role": "user", "content": "hello"}]}  # fmt: skip


def sdk(gw: TestServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=str(gw.make_url("")), api_key="k", max_retries=0)


async def ask(gw: TestServer, stream: bool) -> anthropic.types.Message:
    client = sdk(gw)
    try:
        if stream:
            async with client.messages.stream(**ASK) as s:  # type: ignore[arg-type]
                return await s.get_final_message()
        return await client.messages.create(**ASK)  # type: ignore[arg-type]
    finally:
        await client.close()


async def post(gw: TestServer, doc: dict[str, Any]) -> tuple[int, CIMultiDict[str], Any]:
    async with aiohttp.ClientSession() as s, s.post(gw.make_url("/v1/messages"), json=doc) as r:
        body = await r.read()
        return r.status, r.headers.copy(), json.loads(body) if not doc.get("stream") else body


def summary(log_lines: list[str]) -> dict[str, Any]:
    [line] = [json.loads(x) for x in log_lines if '"request_end"' in x]
    return line


async def metric_lines(gw: TestServer, name: str) -> list[str]:
    async with aiohttp.ClientSession() as s, s.get(gw.make_url("/metrics")) as r:
        return [x for x in (await r.text()).splitlines() if x.startswith(name)]


FAILURES = {
    "refused": None,  # u0 points at a port nothing listens on
    "429": Script(status=429, headers={"retry-after": "7"}),
    "503": Script(status=503),
    "500": Script(status=500),
    "stall": Script(items=[Text("late")], delay_before_headers=5.0),
    "overflow": Script(status=400, error_code="context_length_exceeded",
                       error_message="Input tokens exceed the configured limit of 272000 tokens"),
}  # fmt: skip
REASONS = {"refused": "connect", "429": "rate_limit", "503": "overloaded", "500": "5xx",
           "stall": "timeout", "overflow": "overflow"}  # fmt: skip


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("failure", list(FAILURES))
async def test_each_failure_moves_to_the_next_target(
    chain_gateway: ChainFactory, mocks: list[Upstream], log_lines: list[str],
    failure: str, stream: bool,
) -> None:  # fmt: skip
    script = FAILURES[failure]
    gw = await chain_gateway(
        upstreams={"u0": {"base_url": dead_url()}} if script is None else None,
        route={"fallback_on_overflow": True},
        # the stall: streamed, the short wait for a target that is not the last; JSON, the
        # headers timeout itself
        timeouts={"headers": 0.5 if not stream else 600},
        fallback={"stream_headers_timeout": 0.3},
    )
    if script is not None:
        mocks[0].mock.enqueue(script)
    mocks[1].mock.enqueue(Script(items=[Text("from the second target")]))
    message = await ask(gw, stream)
    assert message.model == CLIENT_MODEL  # the client's name, whoever answered
    assert [b.text for b in message.content if b.type == "text"] == ["from the second target"]
    assert message.stop_reason == "end_turn"
    [sent] = mocks[1].mock.requests
    assert (sent.path, sent.body["model"], sent.body["stream"]) == (PATHS[1], "model-b", stream)
    assert mocks[2].mock.requests == []
    line = summary(log_lines)
    assert (line["route"], line["target"], line["fallbacks"]) == (
        "u0:model-a", "u1:model-b", f"u0:model-a:{REASONS[failure]}")  # fmt: skip
    assert line["status"] == 200 and "skipped" not in line
    assert await metric_lines(gw, "gateway_fallbacks_total") == [
        f'gateway_fallbacks_total{{reason="{REASONS[failure]}",target="u0:model-a"}} 1.0'
    ]


async def test_an_overflow_is_the_answer_unless_the_route_says_otherwise(
    chain_gateway: ChainFactory, mocks: list[Upstream]
) -> None:
    gw = await chain_gateway()
    mocks[0].mock.enqueue(FAILURES["overflow"])
    status, _, answer = await post(gw, ASK)
    assert status == 400
    assert answer["error"]["message"].startswith("prompt is too long: ")
    assert mocks[1].mock.requests == [] and mocks[2].mock.requests == []


@pytest.mark.parametrize(("status", "expected"), [(400, 400), (404, 404), (422, 400)])
async def test_a_request_the_upstream_refuses_is_not_sent_elsewhere(
    chain_gateway: ChainFactory, mocks: list[Upstream], status: int, expected: int
) -> None:
    gw = await chain_gateway()
    mocks[0].mock.enqueue(Script(status=status, error_message="bad thing"))
    got, _, _ = await post(gw, ASK)
    assert got == expected
    assert mocks[1].mock.requests == [] and mocks[2].mock.requests == []


async def test_after_the_first_byte_nothing_moves(
    chain_gateway: ChainFactory, mocks: list[Upstream]
) -> None:
    gw = await chain_gateway()
    mocks[0].mock.enqueue(Script(items=[Text("partial answer that breaks")], end="failed",
                                 error_code="server_error", error_message="boom"))  # fmt: skip
    status, _, body = await post(gw, {**ASK, "stream": True})
    assert status == 200
    events = [x for x in body.decode().split("\n\n") if x]
    assert events[-1].startswith("event: error")
    assert not any(e.startswith("event: message_stop") for e in events)
    assert mocks[1].mock.requests == [] and mocks[2].mock.requests == []


async def test_the_third_target_and_the_error_once_all_are_spent(
    chain_gateway: ChainFactory, mocks: list[Upstream], log_lines: list[str]
) -> None:
    gw = await chain_gateway(upstreams={"u0": {"base_url": dead_url()}})
    mocks[1].mock.enqueue(Script(status=503), Script(status=503))
    mocks[2].mock.enqueue(Script(items=[Text("third")]))
    assert [b.text for b in (await ask(gw, False)).content] == ["third"]  # type: ignore[union-attr]
    assert summary(log_lines)["fallbacks"] == "u0:model-a:connect,u1:model-b:overloaded"

    mocks[2].mock.enqueue(Script(status=500, error_message="upstream exploded"))
    status, headers, answer = await post(gw, ASK)
    assert status == 500
    assert answer["error"]["type"] == "api_error"
    message = answer["error"]["message"]
    assert message.startswith(
        "upstream exploded (after u0:model-a: cannot reach upstream 127.0.0.1:"
    )
    assert "connection refused); u1:model-b: " in message
    assert headers["x-should-retry"] == "false"  # the gateway already tried three targets


async def test_rate_limits_stay_retryable_after_the_chain(
    chain_gateway: ChainFactory, mocks: list[Upstream]
) -> None:
    gw = await chain_gateway(route={"fallbacks": [{"upstream": "u1", "model": "model-b"}]})
    mocks[0].mock.enqueue(Script(status=503))
    mocks[1].mock.enqueue(Script(status=429, headers={"retry-after": "3"}))
    status, headers, answer = await post(gw, ASK)
    assert (status, answer["error"]["type"]) == (429, "rate_limit_error")
    assert headers["retry-after"] == "3" and headers.get("x-should-retry") != "false"


async def test_the_budget_stops_the_chain(
    chain_gateway: ChainFactory, mocks: list[Upstream]
) -> None:
    gw = await chain_gateway(fallback={"budget": 0.1})
    mocks[0].mock.enqueue(Script(status=503, delay_before_headers=0.2))
    status, _, answer = await post(gw, ASK)
    assert status == 529
    assert "u1:model-b: not tried (fallback.budget of 0.1s spent)" in answer["error"]["message"]
    assert mocks[1].mock.requests == []


async def test_max_targets(chain_gateway: ChainFactory, mocks: list[Upstream]) -> None:
    gw = await chain_gateway(fallback={"max_targets": 2})
    mocks[0].mock.enqueue(Script(status=503))
    mocks[1].mock.enqueue(Script(status=503))
    status, _, _ = await post(gw, ASK)
    assert status == 529
    assert mocks[2].mock.requests == []


async def test_attempts_per_target_and_the_last_targets_retries(
    chain_gateway: ChainFactory, mocks: list[Upstream], log_lines: list[str]
) -> None:
    gw = await chain_gateway(
        route={"fallbacks": [{"upstream": "u1", "model": "model-b"}]},
        retries={"max_attempts": 3, "backoff_base": 0.01, "backoff_max": 0.02},
        fallback={"attempts_per_target": 2},
    )
    mocks[0].mock.enqueue(Script(status=503), Script(status=503))
    mocks[1].mock.enqueue(Script(status=503), Script(status=503), Script(items=[Text("ok")]))
    status, _, _ = await post(gw, ASK)
    assert status == 200
    assert (len(mocks[0].mock.requests), len(mocks[1].mock.requests)) == (2, 3)
    assert summary(log_lines)["attempts"] == 5


async def test_a_target_that_cannot_serve_the_request_is_skipped(
    chain_gateway: ChainFactory, mocks: list[Upstream], log_lines: list[str]
) -> None:
    gw = await chain_gateway(upstreams={"u0": {"base_url": dead_url()}})
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}
    mocks[2].mock.enqueue(Script(items=[Text("searched")]))
    status, _, answer = await post(gw, {**ASK, "tools": [search]})
    assert status == 200, answer
    assert mocks[1].mock.requests == []  # Chat hosts no web search
    assert [r.body["model"] for r in mocks[2].mock.requests] == ["model-c"]
    line = summary(log_lines)
    assert (line["target"], line["skipped"]) == ("u2:model-c", 1)
    assert line["fallbacks"] == "u0:model-a:connect,u1:model-b:unsupported"


def thinking_turns(family: str) -> dict[str, Any]:
    signature = Signer(SIGNING_KEY).for_family(family).encode("rs_1", "enc-from-" + family)
    return {**ASK, "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm", "signature": signature},
            {"type": "text", "text": "one"}]},
        {"role": "user", "content": "second"}]}  # fmt: skip


@pytest.mark.parametrize(("family", "replayed"), [("u0", True), ("u2", False)])
async def test_thinking_signatures_stay_with_their_upstream(
    chain_gateway: ChainFactory, mocks: list[Upstream], family: str, replayed: bool
) -> None:
    gw = await chain_gateway()
    mocks[0].mock.enqueue(Script(items=[Text("two")]))
    status, _, _ = await post(gw, thinking_turns(family))
    assert status == 200
    sent = [i for i in mocks[0].mock.requests[0].body["input"] if i.get("type") == "reasoning"]
    assert [i["encrypted_content"] for i in sent] == (["enc-from-u0"] if replayed else [])


async def test_a_fallback_drops_the_primarys_thinking(
    chain_gateway: ChainFactory, mocks: list[Upstream]
) -> None:
    gw = await chain_gateway(route={"fallbacks": [{"upstream": "u2", "model": "model-c"}]})
    mocks[0].mock.enqueue(Script(status=503))
    mocks[2].mock.enqueue(Script(items=[Text("two")]))
    status, _, _ = await post(gw, thinking_turns("u0"))
    assert status == 200
    [sent] = mocks[2].mock.requests
    assert not [i for i in sent.body["input"] if i.get("type") == "reasoning"]
    assert [i.get("role") for i in sent.body["input"]] == ["user", "assistant", "user"]
