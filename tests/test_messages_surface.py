"""The rest of the Messages API (issue 15): unknown history blocks (item 3) and
``max_tokens: 0`` pre-warms (item 6), through the gateway over real sockets."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp.test_utils import TestServer

from gateway.mock_upstream import Script, Text
from tests.anthropic_grammar import check_stream, parse_frames
from tests.conftest import GatewayFactory, Upstream

MODEL = "claude-sonnet-5-5"


async def post(gw: TestServer, doc: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(gw.make_url("/v1/messages"), json=doc) as r:
        raw = await r.read()
        return r.status, (json.loads(raw) if r.content_type == "application/json" else raw)


# ---------------------------------------------------------------------------------------------
# Item 3: block types the gateway does not know, in history


def history_with_unknown_blocks() -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [
            {"type": "session_note", "content": "Earlier: the user asked for a haiku."},
            {"type": "text", "text": "go on"},
        ]},
        {"role": "assistant", "content": [
            {"type": "advisor_tool_result", "tool_use_id": "x", "content": {"blob": 1}},
            {"type": "text", "text": "Sure."},
            {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                {"type": "browser_state", "url": "https://example.com", "text": "page text"},
                {"type": "screenshot_ref", "id": 7},
            ]},
        ]},
    ]  # fmt: skip


async def test_unknown_history_blocks_are_rewritten_not_refused(
    gateway: TestServer, upstream: Upstream, log_lines: list[str]
) -> None:
    upstream.mock.enqueue(Script(items=[Text("ok")]))
    tools = [{"name": "look", "input_schema": {"type": "object", "properties": {}}}]
    doc = {"model": MODEL, "max_tokens": 50, "tools": tools,
           "messages": history_with_unknown_blocks()}  # fmt: skip
    status, answer = await post(gateway, doc)
    assert status == 200, answer
    assert answer["content"] == [{"type": "text", "text": "ok"}]
    sent = upstream.mock.requests[-1].body["input"]
    assert sent == [
        {"role": "user", "content": [
            {"type": "input_text", "text": "Earlier: the user asked for a haiku."},
            {"type": "input_text", "text": "go on"},
        ]},
        {"role": "assistant", "content": [
            {"type": "output_text", "text": "Sure.", "annotations": []}]},
        {"type": "function_call", "call_id": "toolu_1", "name": "look", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "toolu_1", "output": "page text"},
    ]  # fmt: skip
    debug = [json.loads(line) for line in log_lines if "unknown_blocks" in line]
    assert [(d["event"], d["ignored"], d["count"]) for d in debug] == [
        (
            "unknown_blocks_rewritten",
            "session_note×1,advisor_tool_result×1,browser_state×1,screenshot_ref×1",
            4,
        )
    ]
    assert "page text" not in json.dumps(debug)  # the log names types, never content


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        # a known type with a bad field is still the client's fault
        (
            [{"role": "user", "content": [{"type": "session_note"}, {"type": "image"}]}],
            "$.messages[0].content[1]: Object missing required field `source`",
        ),
        # a block without a type says so
        (
            [{"role": "user", "content": [{"type": "later_block"}, {"text": "x"}]}],
            "$.messages[0].content[1]: Object missing required field `type`",
        ),
    ],
)
async def test_other_faults_are_still_a_400(
    gateway: TestServer, upstream: Upstream, doc: list[Any], message: str
) -> None:
    status, answer = await post(gateway, {"model": MODEL, "max_tokens": 50, "messages": doc})
    assert status == 400
    assert answer["error"] == {"type": "invalid_request_error", "message": message}
    assert upstream.mock.requests == []


# ---------------------------------------------------------------------------------------------
# Item 6: max_tokens 0


@pytest.mark.parametrize("dialect", ["responses", "chat"])
async def test_max_tokens_zero_generates_nothing(
    make_gateway: GatewayFactory, upstream: Upstream, dialect: str
) -> None:
    gw = await make_gateway(upstreams={"default": {"base_url": upstream.url, "dialect": dialect}})
    doc = {"model": MODEL, "max_tokens": 0, "system": "Long shared prefix.",
           "messages": [{"role": "user", "content": "warm the cache"}]}  # fmt: skip
    status, answer = await post(gw, doc)
    assert status == 200, answer
    n = answer["usage"]["input_tokens"]
    assert answer == {
        "id": answer["id"],
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [],
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": {"input_tokens": n, "output_tokens": 0,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }  # fmt: skip
    assert answer["id"].startswith("msg_") and n > 0
    paths = [r.path for r in upstream.mock.requests]
    # a count (the upstream's where it has one), never a generation
    assert paths == (["/v1/responses/input_tokens"] if dialect == "responses" else [])
    # the same count the count_tokens endpoint gives
    counted = {k: v for k, v in doc.items() if k != "max_tokens"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.make_url("/v1/messages/count_tokens"), json=counted) as r,
    ):
        assert await r.json() == {"input_tokens": n}

    client = anthropic.AsyncAnthropic(base_url=str(gw.make_url("")), api_key="k", max_retries=0)
    async with client.messages.stream(**doc) as stream:
        final = await stream.get_final_message()
    await client.close()
    assert final.content == [] and final.stop_reason == "max_tokens"
    assert final.usage.input_tokens == n and final.usage.output_tokens == 0
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.make_url("/v1/messages"), json={**doc, "stream": True}) as r,
    ):
        events = parse_frames(await r.read())
    check_stream(events)
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "message_delta",
        "message_stop",
    ]
    assert all(r.path != "/v1/responses" and "chat" not in r.path for r in upstream.mock.requests)
