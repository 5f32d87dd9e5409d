"""Anthropic-schema client tools (issue 15 item 2): bash, text_editor, memory and computer go
upstream as function tools under their own names with the published input schemas; calls come
back unchanged for the client to run. Toolsets and unknown tool types are a 400 that says
what is not supported, on both dialects."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp.test_utils import TestServer

from gateway.anthropic.functions import function_tools
from gateway.anthropic.strict import NO_STRICT
from gateway.mock_upstream import FunctionCall, Script, Text
from gateway.schemas.anthropic import REQUEST_DECODER
from tests.conftest import GatewayFactory, Upstream

MODEL = "claude-sonnet-5-5"


def functions(tools: list[dict[str, Any]]) -> list[tuple[str, str | None, dict[str, Any]]]:
    doc = {"model": MODEL, "max_tokens": 5, "tools": tools,
           "messages": [{"role": "user", "content": "x"}]}  # fmt: skip
    req = REQUEST_DECODER.decode(json.dumps(doc).encode())
    return [(f.name, f.description, f.parameters) for f in function_tools(req, NO_STRICT)]


def props(schema: dict[str, Any]) -> list[str]:
    return list(schema["properties"])


def test_text_editor_versions() -> None:
    [(name, text, schema)] = functions(
        [{"type": "text_editor_20250728", "name": "str_replace_based_edit_tool",
          "max_characters": 10000}]
    )  # fmt: skip
    assert name == "str_replace_based_edit_tool"
    assert text is not None and text.endswith(
        "view output is cut at 10000 characters: use view_range."
    )
    assert props(schema) == ["command", "path", "file_text", "old_str", "new_str",
                             "insert_line", "view_range", "insert_text"]  # fmt: skip
    assert schema["properties"]["command"]["enum"] == ["view", "create", "str_replace", "insert"]
    assert schema["required"] == ["command", "path"]
    # 20250429: insert takes new_str; 20250124: also undo_edit, and the older name
    [(_, _, s0429)] = functions(
        [{"type": "text_editor_20250429", "name": "str_replace_based_edit_tool"}]
    )
    assert "insert_text" not in s0429["properties"]
    assert s0429["properties"]["new_str"]["description"].endswith("insert: the text to insert.")
    [(old, _, s0124)] = functions([{"type": "text_editor_20250124", "name": "str_replace_editor"}])
    assert old == "str_replace_editor"
    assert s0124["properties"]["command"]["enum"][-1] == "undo_edit"


def test_memory_and_bash() -> None:
    [(bash, _, b), (memory, text, m)] = functions(
        [{"type": "bash_20250124", "name": "bash"}, {"type": "memory_20250818", "name": "memory"}]
    )
    assert (bash, props(b)) == ("bash", ["command", "restart"])
    assert "required" not in b  # command is not needed to restart
    assert memory == "memory" and text is not None and "VIEW YOUR MEMORY DIRECTORY" in text
    assert m["properties"]["command"]["enum"] == [
        "view", "create", "str_replace", "insert", "delete", "rename"]  # fmt: skip
    assert props(m) == ["command", "path", "view_range", "file_text", "old_str", "new_str",
                        "insert_line", "insert_text", "old_path", "new_path"]  # fmt: skip


def test_computer_versions() -> None:
    [(name, text, s)] = functions(
        [{"type": "computer_20251124", "name": "computer", "display_width_px": 1280,
          "display_height_px": 800, "display_number": 1, "enable_zoom": True}]
    )  # fmt: skip
    assert name == "computer"
    assert text is not None and text.endswith(
        "The screen is 1280x800 pixels. The display number is 1."
    )
    assert s["properties"]["action"]["enum"] == [
        "key", "type", "mouse_move", "left_click", "left_click_drag", "right_click",
        "middle_click", "double_click", "screenshot", "cursor_position", "left_mouse_down",
        "left_mouse_up", "scroll", "hold_key", "wait", "triple_click", "zoom"]  # fmt: skip
    assert props(s) == ["action", "coordinate", "start_coordinate", "text", "scroll_direction",
                        "scroll_amount", "duration", "region"]  # fmt: skip
    # without enable_zoom: no zoom; 20241022: the ten first actions, three parameters
    [(_, _, no_zoom)] = functions([{"type": "computer_20251124", "name": "computer",
                                    "display_width_px": 1, "display_height_px": 1}])  # fmt: skip
    assert "zoom" not in no_zoom["properties"]["action"]["enum"]
    assert "region" not in no_zoom["properties"]
    [(_, _, old)] = functions([{"type": "computer_20241022", "name": "computer",
                                "display_width_px": 1, "display_height_px": 1}])  # fmt: skip
    assert len(old["properties"]["action"]["enum"]) == 10
    assert props(old) == ["action", "coordinate", "text"]


async def post(gw: TestServer, doc: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(gw.make_url("/v1/messages"), json=doc) as r:
        return r.status, await r.json()


@pytest.mark.parametrize("dialect", ["responses", "chat"])
async def test_calls_come_back_unchanged_for_the_client(
    make_gateway: GatewayFactory, upstream: Upstream, dialect: str
) -> None:
    gw = await make_gateway(upstreams={"default": {"base_url": upstream.url, "dialect": dialect}})
    tools = [{"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
             {"type": "bash_20250124", "name": "bash"}]  # fmt: skip
    args = {"command": "insert", "path": "/repo/a.py", "insert_line": 3, "insert_text": "x = 1\n"}
    upstream.mock.enqueue(
        Script(items=[FunctionCall("str_replace_based_edit_tool", json.dumps(args), call_id="c1")]),
        Script(items=[Text("Done.")]),
    )
    client = anthropic.AsyncAnthropic(base_url=str(gw.make_url("")), api_key="k", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "add x"}]
    async with client.messages.stream(model=MODEL, max_tokens=100, tools=tools,
                                      messages=messages) as s:  # fmt: skip
        first = await s.get_final_message()
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert (call.id, call.name, call.input) == ("c1", "str_replace_based_edit_tool", args)
    assert first.stop_reason == "tool_use"
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1",
                                      "content": "Inserted at line 3."}]},
    ]  # fmt: skip
    second = await client.messages.create(
        model=MODEL, max_tokens=100, tools=tools, messages=messages
    )
    await client.close()
    assert [b.text for b in second.content if b.type == "text"] == ["Done."]
    body = upstream.mock.requests[-1].body
    if dialect == "responses":
        names = [t["name"] for t in body["tools"]]
        out = [i for i in body["input"] if i.get("type") == "function_call_output"]
        assert out == [{"type": "function_call_output", "call_id": "c1",
                        "output": "Inserted at line 3."}]  # fmt: skip
    else:
        names = [t["function"]["name"] for t in body["tools"]]
        assert body["messages"][-1] == {"role": "tool", "tool_call_id": "c1",
                                        "content": "Inserted at line 3."}  # fmt: skip
    assert names == ["str_replace_based_edit_tool", "bash"]


@pytest.mark.parametrize("dialect", ["responses", "chat"])
@pytest.mark.parametrize(
    ("tool", "message"),
    [
        ({"type": "computer_toolset_20260801"},
         "tools.0: computer_toolset_20260801 is not supported by the gateway: a toolset's calls "
         "are one tool_use per action with a toolset_name, which has no OpenAI function-call "
         "equivalent; offer computer_20251124 instead"),
        ({"type": "browser_toolset_20260801", "configs": {}},
         "tools.0: browser_toolset_20260801 is not supported by the gateway: a toolset's calls "
         "are one tool_use per action with a toolset_name, which has no OpenAI function-call "
         "equivalent"),
        ({"type": "advisor_20260301", "name": "advisor"},
         "tools.0: tool type 'advisor_20260301' is not supported by the gateway (it serves "
         "custom tools; bash, text_editor, memory and computer as functions; and web_search, "
         "code_execution and the MCP connector on Responses routes)"),
    ],
)  # fmt: skip
async def test_what_cannot_be_offered_is_a_400(
    make_gateway: GatewayFactory, upstream: Upstream, dialect: str, tool: dict[str, Any],
    message: str,
) -> None:  # fmt: skip
    gw = await make_gateway(upstreams={"default": {"base_url": upstream.url, "dialect": dialect}})
    status, answer = await post(gw, {"model": MODEL, "max_tokens": 10, "tools": [tool],
                                     "messages": [{"role": "user", "content": "x"}]})  # fmt: skip
    assert status == 400
    assert answer["error"] == {"type": "invalid_request_error", "message": message}
    assert upstream.mock.requests == []
