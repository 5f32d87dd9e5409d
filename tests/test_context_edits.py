"""``context_management`` edits applied by the gateway (issue 15 item 4): the history the
upstream gets, ``applied_edits`` in the JSON answer and the final ``message_delta``, the
count endpoint's ``original_input_tokens``, and the 400s the API gives."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp.test_utils import TestServer

from gateway.anthropic.compaction import COMPACTED, COMPACTION_TOKEN
from gateway.anthropic.context_edits import PLACEHOLDER, rough_count
from gateway.anthropic.signatures import Signer
from gateway.mock_upstream import Compaction, Script, Text
from tests.anthropic_grammar import check_stream, parse_frames
from tests.conftest import SIGNING_KEY, GatewayFactory, Upstream

MODEL = "claude-sonnet-5-5"
SIGNER = Signer(SIGNING_KEY).for_family("default")  # the upstream the tests use
THINKING = {"type": "enabled", "budget_tokens": 2000}


async def post(gw: TestServer, doc: dict[str, Any], path: str = "/v1/messages") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(gw.make_url(path), json=doc) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, parse_frames(await r.read())


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def thought(n: int) -> dict[str, Any]:
    return {"type": "thinking", "thinking": f"thought number {n} " * 10,
            "signature": SIGNER.encode(f"rs_{n}", f"enc-{n}")}  # fmt: skip


def turns_with_thinking(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        out += [
            user(f"q{i}"),
            {"role": "assistant", "content": [thought(i), {"type": "text", "text": f"a{i}"}]},
        ]
    return [*out, user("last")]


def upstream_input(upstream: Upstream) -> list[dict[str, Any]]:
    return upstream.mock.requests[-1].body["input"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"context_management": {"edits": [{"type": "clear_everything"}]}},
         "context_management.edits.0.type: unknown edit 'clear_everything' (expected "
         "clear_tool_uses_20250919, clear_thinking_20251015 or compact_20260112)"),
        ({"context_management": {"edits": [{"type": "clear_thinking_20251015"}]}},
         "`clear_thinking_20251015` strategy requires `thinking` to be enabled or adaptive"),
        ({"thinking": THINKING, "context_management": {"edits": [
            {"type": "clear_tool_uses_20250919"}, {"type": "clear_thinking_20251015"}]}},
         "context_management.edits.1: clear_thinking_20251015 must be listed first in edits"),
        ({"thinking": THINKING, "context_management": {"edits": [
            {"type": "clear_thinking_20251015", "keep": {"type": "thinking_turns", "value": 0}}]}},
         "context_management.edits.0.keep.value: must be at least 1"),
        ({"context_management": {"edits": [
            {"type": "clear_tool_uses_20250919", "trigger": {"type": "input_tokens"}}]}},
         "context_management.edits.0.trigger.value: must be a non-negative integer"),
        ({"context_management": {"edits": [
            {"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 1000}}]}},
         "context_management.edits.0.trigger.value: must be at least 50000"),
    ],
)  # fmt: skip
async def test_edits_the_api_refuses(
    gateway: TestServer, upstream: Upstream, extra: dict[str, Any], message: str
) -> None:
    doc = {"model": MODEL, "max_tokens": 50, "messages": [user("x")], **extra}
    status, answer = await post(gateway, doc)
    assert status == 400
    assert answer["error"] == {"type": "invalid_request_error", "message": message}
    assert upstream.mock.requests == []


async def test_clear_thinking_keeps_the_last_turns(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(Script(items=[Text("ok")]))
    keep = {"type": "thinking_turns", "value": 1}
    doc = {"model": MODEL, "max_tokens": 50, "thinking": THINKING,
           "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": keep}]},
           "messages": turns_with_thinking(3)}  # fmt: skip
    status, answer = await post(gateway, doc)
    assert status == 200
    reasoning = [
        i["encrypted_content"] for i in upstream_input(upstream) if i.get("type") == "reasoning"
    ]
    assert reasoning == ["enc-2"]  # only the last turn's thinking went upstream
    cleared = rough_count(thought(0)["thinking"]) + rough_count(thought(1)["thinking"])
    assert answer["context_management"] == {"applied_edits": [
        {"type": "clear_thinking_20251015", "cleared_thinking_turns": 2,
         "cleared_input_tokens": cleared}]}  # fmt: skip


async def test_claude_codes_keep_all_is_a_no_op_reported_empty(
    gateway: TestServer, upstream: Upstream
) -> None:
    doc = {"model": MODEL, "max_tokens": 50, "thinking": THINKING, "stream": True,
           "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
           "messages": turns_with_thinking(2)}  # fmt: skip
    upstream.mock.enqueue(Script(items=[Text("ok")]))
    status, events = await post(gateway, doc)
    assert status == 200
    check_stream(events)
    [delta] = [d for name, d in events if name == "message_delta"]
    assert delta["context_management"] == {"applied_edits": []}
    reasoning = [i for i in upstream_input(upstream) if i.get("type") == "reasoning"]
    assert len(reasoning) == 2
    # without context_management the answer has no such field
    upstream.mock.enqueue(Script(items=[Text("ok")]))
    _, plain = await post(gateway, {**doc, "stream": False, "context_management": None})
    assert "context_management" not in plain


def tool_history(names: list[str], result: str = "result text") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [user("start")]
    for i, name in enumerate(names):
        out.append(
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": f"t{i}",
                        "name": name,
                        "input": {"arg": f"value {i}"},
                    }
                ],
            }
        )
        out.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"t{i}", "content": f"{result} {i}"}
                ],
            }
        )
    return out  # fmt: skip


TOOLS = [{"name": n, "input_schema": {"type": "object", "properties": {}}}
         for n in ("Read", "Edit", "Grep")]  # fmt: skip


async def test_clear_tool_uses(gateway: TestServer, upstream: Upstream) -> None:
    edit = {"type": "clear_tool_uses_20250919", "trigger": {"type": "tool_uses", "value": 3},
            "keep": {"type": "tool_uses", "value": 2}, "exclude_tools": ["Edit"],
            "clear_tool_inputs": ["Grep"]}  # fmt: skip
    names = ["Read", "Edit", "Grep", "Read", "Grep"]
    doc = {"model": MODEL, "max_tokens": 50, "tools": TOOLS,
           "context_management": {"edits": [edit]}, "messages": tool_history(names)}  # fmt: skip
    upstream.mock.enqueue(Script(items=[Text("ok")]))
    status, answer = await post(gateway, doc)
    assert status == 200
    items = upstream_input(upstream)
    outputs = {i["call_id"]: i["output"] for i in items if i.get("type") == "function_call_output"}
    args = {i["call_id"]: i["arguments"] for i in items if i.get("type") == "function_call"}
    # t0 (Read) and t2 (Grep) cleared; t1 is Edit (excluded); t3, t4 are the two kept
    assert outputs == {"t0": PLACEHOLDER, "t1": "result text 1", "t2": PLACEHOLDER,
                       "t3": "result text 3", "t4": "result text 4"}  # fmt: skip
    assert args["t2"] == "{}" and args["t0"] == '{"arg":"value 0"}'
    gain = max(0, rough_count("result text 0") - rough_count(PLACEHOLDER)) * 2
    gain += rough_count('{"arg":"value 2"}')
    assert answer["context_management"] == {"applied_edits": [
        {"type": "clear_tool_uses_20250919", "cleared_tool_uses": 2,
         "cleared_input_tokens": gain}]}  # fmt: skip

    # clear_at_least more than the edit would free: nothing is cleared
    edit["clear_at_least"] = {"type": "input_tokens", "value": 10_000}
    upstream.mock.enqueue(Script(items=[Text("ok")]))
    _, answer = await post(gateway, doc)
    assert answer["context_management"] == {"applied_edits": []}
    outputs = [
        i["output"] for i in upstream_input(upstream) if i.get("type") == "function_call_output"
    ]
    assert PLACEHOLDER not in outputs


async def test_input_token_trigger_and_the_count_endpoint(
    gateway: TestServer, upstream: Upstream
) -> None:
    big = "x" * 200_000  # ~50 000 tokens each, so five pass the default 100 000 trigger
    doc = {"model": MODEL, "tools": TOOLS,
           "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
           "messages": tool_history(["Read"] * 5, result=big)}  # fmt: skip
    status, counted = await post(gateway, doc, "/v1/messages/count_tokens")
    assert status == 200
    cleared = 2 * (rough_count(f"{big} 0") - rough_count(PLACEHOLDER))  # all but the last 3
    assert counted["context_management"] == {
        "original_input_tokens": counted["input_tokens"] + cleared
    }
    upstream.mock.enqueue(Script(items=[Text("ok")]))
    _, answer = await post(gateway, {**doc, "max_tokens": 20})
    assert answer["context_management"]["applied_edits"] == [
        {
            "type": "clear_tool_uses_20250919",
            "cleared_tool_uses": 2,
            "cleared_input_tokens": cleared,
        }
    ]
    outputs = [
        i["output"] for i in upstream_input(upstream) if i.get("type") == "function_call_output"
    ]
    assert outputs[:2] == [PLACEHOLDER, PLACEHOLDER] and outputs[2].startswith("xxx")
    assert json.dumps(upstream_input(upstream)).count(big) == 3


# ---------------------------------------------------------------------------------------------
# compact_20260112: the Responses API's own compaction


def compact(**kw: Any) -> dict[str, Any]:
    return {"edits": [{"type": "compact_20260112",
                       "trigger": {"type": "input_tokens", "value": 60_000}, **kw}]}  # fmt: skip


async def test_compaction_both_ways(gateway: TestServer, upstream: Upstream) -> None:
    doc = {"model": MODEL, "max_tokens": 50, "context_management": compact(),
           "messages": [user("a long session")]}  # fmt: skip
    upstream.mock.enqueue(Script(items=[Compaction("opaque-1"), Text("Carrying on.")]))
    status, answer = await post(gateway, doc)
    assert status == 200
    sent = upstream.mock.requests[-1].body
    assert sent["context_management"] == [{"type": "compaction", "compact_threshold": 60_000}]
    block, text = answer["content"]
    assert text == {"type": "text", "text": "Carrying on."}
    assert block["type"] == "compaction" and block["content"] == COMPACTED
    assert SIGNER.unseal(COMPACTION_TOKEN, block["encrypted_content"])["e"] == "opaque-1"
    assert answer["stop_reason"] == "end_turn"
    assert answer["context_management"] == {"applied_edits": []}

    # the next turn: everything before the block is dropped; the block is the item again
    history = [user("old question"), {"role": "assistant", "content": "old answer"},
               user("a long session"), {"role": "assistant", "content": answer["content"]},
               user("next")]  # fmt: skip
    upstream.mock.enqueue(Script(items=[Text("ok")]))
    status, _ = await post(gateway, {**doc, "messages": history})
    assert status == 200
    assert upstream_input(upstream) == [
        {"type": "compaction", "encrypted_content": "opaque-1"},
        {"role": "assistant", "content": [
            {"type": "output_text", "text": "Carrying on.", "annotations": []}]},
        {"role": "user", "content": [{"type": "input_text", "text": "next"}]},
    ]  # fmt: skip


async def test_pause_after_compaction_streamed_and_not(
    gateway: TestServer, upstream: Upstream
) -> None:
    doc = {"model": MODEL, "max_tokens": 50, "messages": [user("go")],
           "context_management": compact(pause_after_compaction=True)}  # fmt: skip
    script = Script(items=[Compaction("opaque-2"), Text("never shown")])
    upstream.mock.enqueue(script)
    _, answer = await post(gateway, doc)
    assert [b["type"] for b in answer["content"]] == ["compaction"]
    assert answer["stop_reason"] == "compaction"

    upstream.mock.enqueue(script)
    client = anthropic.AsyncAnthropic(base_url=str(gateway.make_url("")), api_key="k",
                                      max_retries=0)  # fmt: skip
    async with client.beta.messages.stream(**doc) as s:
        final = await s.get_final_message()
    await client.close()
    assert final.stop_reason == "compaction"
    [block] = final.content
    assert block.type == "compaction" and block.content == COMPACTED
    assert SIGNER.unseal(COMPACTION_TOKEN, block.encrypted_content or "")["e"] == "opaque-2"
    assert final.context_management is not None
    assert final.context_management.applied_edits == []

    upstream.mock.enqueue(script)
    _, events = await post(gateway, {**doc, "stream": True})
    check_stream(events)
    assert [(n, d.get("delta", {}).get("type")) for n, d in events if "block" in n] == [
        ("content_block_start", None), ("content_block_delta", "compaction_delta"),
        ("content_block_stop", None)]  # fmt: skip


async def test_claudes_own_compaction_block_is_its_summary(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(upstreams={"default": {"base_url": upstream.url, "dialect": "chat"}})
    history = [user("old"), {"role": "assistant", "content": [
        {"type": "compaction", "content": "The user wants a poem.", "encrypted_content": "x"},
        {"type": "text", "text": "Here it is."}]}, user("again")]  # fmt: skip
    upstream.mock.enqueue(Script(items=[Text("ok")]))
    status, _ = await post(gw, {"model": MODEL, "max_tokens": 20, "messages": history})
    assert status == 200
    assert upstream.mock.requests[-1].body["messages"] == [
        {"role": "assistant",
         "content": "Summary of the earlier conversation:\nThe user wants a poem.\nHere it is."},
        {"role": "user", "content": "again"},
    ]  # fmt: skip
    # the edit itself needs an upstream that compacts
    status, err = await post(gw, {"model": MODEL, "max_tokens": 20, "messages": [user("x")],
                                  "context_management": compact()})  # fmt: skip
    assert status == 400
    assert err["error"]["message"] == (
        "context_management.edits.0: compact_20260112 needs an upstream that compacts (the "
        "Responses API with compaction on); route 'default:gpt-5' does not"
    )
