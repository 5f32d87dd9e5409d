"""Tests for gateway.dialects.chat.request (Anthropic Messages → Chat Completions payload).

Every request is decoded from JSON bytes with the real ``REQUEST_DECODER``; expected payloads
are exact. Each translation also goes through ``validate_chat_request``, the Chat rules that
upstreams enforce with a 400 (protocol.md §8, §10 item 11). The Anthropic request builders are
shared with the Responses tests.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import msgspec
import pytest

from gateway.anthropic.ids import call_id_to_upstream
from gateway.anthropic.signatures import Signer
from gateway.anthropic.tool_schema import upstream_tool_name
from gateway.dialects.chat.request import IMAGE_OMITTED, to_chat
from gateway.errors import InvalidRequestError
from gateway.schemas.anthropic import REQUEST_DECODER, MessagesRequest
from gateway.settings import Route
from tests.fixtures.claude_code import claude_code_request
from tests.test_to_responses import (
    assistant,
    image_b64,
    text,
    thinking,
    tool_result,
    tool_use,
    user,
)

SIGNER = Signer(b"test-signing-key-0123456789")
ROUTE = Route(
    name="local:qwen3",
    dialect="chat",
    base_url="http://127.0.0.1:8000/v1",
    api_key=None,
    headers={},
    upstream_model="qwen3",
)


def route(**kw: Any) -> Route:
    return msgspec.structs.replace(ROUTE, **kw)


def decode(body: dict[str, Any]) -> MessagesRequest:
    return REQUEST_DECODER.decode(msgspec.json.encode(body))


def body(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-haiku-4-5", "max_tokens": 1024, "messages": messages, **extra}


def translate(b: dict[str, Any], r: Route = ROUTE, *, stream: bool = False) -> dict[str, Any]:
    payload = to_chat(decode(b), r, SIGNER, stream=stream)
    validate_chat_request(payload)
    return payload


def messages_of(msgs: list[dict[str, Any]], r: Route = ROUTE, **extra: Any) -> list[Any]:
    result: list[Any] = translate(body(msgs, **extra), r)["messages"]
    return result


# --- Chat expectations ---------------------------------------------------------------------


def S(content: str) -> dict[str, Any]:
    return {"role": "system", "content": content}


def U(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def A(content: str, *calls: dict[str, Any], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": content, **extra}
    if calls:
        out["tool_calls"] = list(calls)
    return out


def T(call_id: str, content: str = "ok") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def fn(call_id: str, args: str = "{}", name: str = "get_weather") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def tx(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def img(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


PNG = "data:image/png;base64,iVBORw0KGgo="
_PDF = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}


def pdf(filename: str) -> dict[str, Any]:
    return {
        "type": "file",
        "file": {"filename": filename, "file_data": "data:application/pdf;base64,JVBERi0x"},
    }


# --- A validator of the Chat rules upstreams enforce ------------------------------------------

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def validate_chat_request(payload: dict[str, Any]) -> None:
    """Raise AssertionError when ``payload`` breaks a rule Chat servers enforce with a 400:
    every assistant ``tool_calls`` message is followed at once by one tool message per id
    (`The following tool_call_ids did not have response messages`), tool messages appear
    nowhere else, tool content is text, ids are unique and ≤ 64 characters, arguments are
    JSON text, user parts are text / image_url / file, ≤ 4 stop strings."""
    msgs = payload["messages"]
    assert msgs, "messages must not be empty"
    seen: set[str] = set()
    i = 0
    while i < len(msgs):
        m = msgs[i]
        role = m["role"]
        assert role in ("system", "user", "assistant", "tool"), m
        if role == "tool":
            raise AssertionError(f"messages[{i}]: tool message without its assistant tool_calls")
        if role == "assistant":
            assert isinstance(m["content"], str)
            ids = []
            for call in m.get("tool_calls", []):
                assert call["type"] == "function"
                assert call["id"] not in seen and len(call["id"]) <= 64, call["id"]
                assert _NAME.match(call["function"]["name"])
                json.loads(call["function"]["arguments"])
                seen.add(call["id"])
                ids.append(call["id"])
            answers = [msgs[i + 1 + k] for k in range(len(ids))]
            assert [a["role"] for a in answers] == ["tool"] * len(ids), f"messages[{i}]"
            assert [a["tool_call_id"] for a in answers] == ids
            assert all(isinstance(a["content"], str) and a["content"] for a in answers)
            i += 1 + len(ids)
            continue
        content = m["content"]
        if isinstance(content, list):
            assert content, f"messages[{i}] has empty content"
            for part in content:
                assert part["type"] in ("text", "image_url", "file"), part
                assert role == "user" or part["type"] == "text"
        else:
            assert isinstance(content, str) and content, f"messages[{i}] has empty content"
        i += 1
    for tool in payload.get("tools", []):
        assert tool["type"] == "function" and _NAME.match(tool["function"]["name"])
    assert len(payload.get("stop", [])) <= 4
    field = "max_tokens" if "max_tokens" in payload else "max_completion_tokens"
    assert payload[field] >= 1


# ==============================================================================================
# Top-level fields


def test_minimal_request_exact_payload() -> None:
    assert translate(body([user("Hello")])) == {
        "model": "qwen3",
        "messages": [U("Hello")],
        "max_completion_tokens": 1024,
        "stream": False,
    }


@pytest.mark.parametrize(
    ("stream", "stream_usage", "expected"),
    [
        (True, True, {"stream": True, "stream_options": {"include_usage": True}}),
        (True, False, {"stream": True}),
        (False, True, {"stream": False}),
    ],
)
def test_stream_and_usage_option(
    stream: bool, stream_usage: bool, expected: dict[str, Any]
) -> None:
    payload = translate(body([user("x")]), route(stream_usage=stream_usage), stream=stream)
    assert {k: v for k, v in payload.items() if k.startswith("stream")} == expected


@pytest.mark.parametrize(
    ("max_tokens", "limit", "field", "expected"),
    [
        (1024, None, "max_completion_tokens", 1024),
        (64000, 32768, "max_tokens", 32768),  # Claude Code's large asks are clamped
        (100, 32768, "max_tokens", 100),
        (1, None, "max_completion_tokens", 1),  # no Responses-style minimum of 16
        (0, None, "max_tokens", 1),  # cache pre-warm: 0 is not a valid Chat limit
    ],
)
def test_max_tokens(max_tokens: int, limit: int | None, field: str, expected: int) -> None:
    payload = translate(
        body([user("x")], max_tokens=max_tokens),
        route(max_output_tokens=limit, max_tokens_field=field),
    )
    assert payload[field] == expected
    other = {"max_tokens", "max_completion_tokens"} - {field}
    assert not other & set(payload)


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("Be brief.", [S("Be brief."), U("x")]),
        ("", [U("x")]),
        (
            [
                {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.330.03d;"},
                {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": ""},
                {"type": "text", "text": "B"},
            ],
            [S("A\n\nB"), U("x")],
        ),
        ([{"type": "text", "text": "x-anthropic-billing-header: cc_version=1;"}], [U("x")]),
    ],
    ids=["string", "empty", "blocks-billing-header-dropped", "only-billing-header"],
)
def test_system(system: Any, expected: list[dict[str, Any]]) -> None:
    assert messages_of([user("x")], system=system) == expected


@pytest.mark.parametrize(
    ("r", "extra", "expected"),
    [
        (
            route(sampling=True),
            {"temperature": 0.2, "top_p": 0.9},
            {"temperature": 0.2, "top_p": 0.9},
        ),
        (route(), {"temperature": 0.2, "top_p": 0.9}, {}),
        (route(top_k=True), {"top_k": 40}, {"top_k": 40}),
        (route(), {"top_k": 40}, {}),
        (route(sampling=True, top_k=True), {}, {}),
    ],
    ids=["sampling-on", "sampling-off", "top-k-on", "top-k-off", "nothing-sent"],
)
def test_sampling(r: Route, extra: dict[str, Any], expected: dict[str, Any]) -> None:
    payload = translate(body([user("x")], **extra), r)
    assert {k: payload[k] for k in ("temperature", "top_p", "top_k") if k in payload} == expected


@pytest.mark.parametrize(
    ("stops", "expected"),
    [
        (["</a>"], ["</a>"]),
        (["1", "", "2", "3", "4", "5"], ["1", "2", "3", "4"]),  # the rest is scanned for
        ([], None),
        ([""], None),
        (None, None),
    ],
)
def test_stop_sequences(stops: list[str] | None, expected: list[str] | None) -> None:
    extra = {} if stops is None else {"stop_sequences": stops}
    assert translate(body([user("x")], **extra)).get("stop") == expected


def test_metadata_user_id_hashed_into_user() -> None:
    payload = translate(body([user("x")], metadata={"user_id": "alice@example.com"}))
    assert payload["user"] == hashlib.sha256(b"alice@example.com").hexdigest()[:32]
    assert "safety_identifier" not in payload and "prompt_cache_key" not in payload


@pytest.mark.parametrize(
    ("tier", "expected"), [("auto", "auto"), ("standard_only", "default"), ("x", None)]
)
def test_service_tier(tier: str, expected: str | None) -> None:
    assert translate(body([user("x")], service_tier=tier)).get("service_tier") == expected


def test_response_format() -> None:
    schema = {
        "title": "Answer",
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": False,
    }
    payload = translate(
        body([user("x")], output_config={"format": {"type": "json_schema", "schema": schema}})
    )
    # the optional property becomes required and nullable (OpenAI's strict mode)
    strict = {
        "title": "Answer",
        "type": "object",
        "properties": {"a": {"type": ["string", "null"]}},
        "additionalProperties": False,
        "required": ["a"],
    }
    assert payload["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": strict, "strict": True},
    }
    with pytest.raises(InvalidRequestError, match=r"^output_config\.format\.schema"):
        translate(body([user("x")], output_config={"format": {"type": "json_schema"}}))


def test_signer_and_session_do_not_change_the_payload() -> None:
    req = decode(body([user("x")], metadata={"user_id": "u"}))
    a = to_chat(req, ROUTE, SIGNER, stream=True, session_id="s1")
    b = to_chat(req, ROUTE, Signer(b"another-key-abcdefghijklmnop"), stream=True)
    assert a == b


def test_ignored_fields() -> None:
    payload = translate(
        body(
            [user("x")],
            thinking={"type": "enabled", "budget_tokens": 2048},
            context_management={"edits": []},
            cache_control={"type": "ephemeral"},
            container="c",
        )
    )
    assert set(payload) == {"model", "messages", "max_completion_tokens", "stream"}


# ==============================================================================================
# Thinking → reasoning_effort (protocol.md §9.10)


@pytest.mark.parametrize(
    ("r", "extra", "expected"),
    [
        (
            route(reasoning_effort=True),
            {"thinking": {"type": "enabled", "budget_tokens": 2048}},
            "low",
        ),
        (
            route(reasoning_effort=True),
            {"thinking": {"type": "enabled", "budget_tokens": 8000}},
            "medium",
        ),
        (
            route(reasoning_effort=True),
            {"thinking": {"type": "enabled", "budget_tokens": 20000}},
            "high",
        ),
        (
            route(reasoning_effort=True),
            {"thinking": {"type": "adaptive"}, "output_config": {"effort": "xhigh"}},
            "xhigh",
        ),
        (route(reasoning_effort=True), {"thinking": {"type": "adaptive"}}, None),
        (
            route(reasoning_effort=True, default_effort="medium"),
            {"thinking": {"type": "adaptive"}},
            "medium",
        ),
        (route(reasoning_effort=True), {"output_config": {"effort": "low"}}, "low"),
        (route(reasoning_effort=True), {"thinking": {"type": "disabled"}}, None),
        (route(reasoning_effort=True), {"thinking": {"type": "between_tools"}}, None),
        (route(), {"thinking": {"type": "enabled", "budget_tokens": 2048}}, None),
        (
            route(reasoning_effort=True, reasoning=False),
            {"thinking": {"type": "enabled", "budget_tokens": 2048}},
            None,
        ),
    ],
    ids=[
        "budget-low",
        "budget-medium",
        "budget-high",
        "explicit-effort-wins",
        "adaptive-no-effort",
        "adaptive-route-default",
        "effort-without-thinking",
        "disabled",
        "unknown-type",
        "route-switch-off",
        "model-takes-no-reasoning",
    ],
)
def test_reasoning_effort(r: Route, extra: dict[str, Any], expected: str | None) -> None:
    assert translate(body([user("x")], **extra), r).get("reasoning_effort") == expected


def test_system_message_effort_overrides() -> None:
    msgs = [user("x"), {"role": "system", "content": "env", "output_config": {"effort": "high"}}]
    payload = translate(
        body(msgs, thinking={"type": "adaptive"}, output_config={"effort": "low"}),
        route(reasoning_effort=True),
    )
    assert payload["reasoning_effort"] == "high"


# ==============================================================================================
# Tools and tool_choice (protocol.md §9.1)

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"city": {"type": "string"}, "url": {"type": "string", "format": "uri"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "cache_control": {"type": "ephemeral"},
}
WEATHER_FN = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "url": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
BARE = {"name": "ping", "input_schema": {"type": "object"}}
BARE_FN = {
    "type": "function",
    "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}},
}
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        ([WEATHER, BARE], [WEATHER_FN, BARE_FN]),
        ([WEATHER, WEB_SEARCH], [WEATHER_FN]),
        ([WEB_SEARCH], None),
        (
            [{"name": "github.create_issue", "input_schema": {"type": "object", "properties": {}}}],
            [
                {
                    "type": "function",
                    "function": {
                        "name": upstream_tool_name("github.create_issue"),
                        "parameters": {"type": "object", "properties": {}},
                    },
                }
            ],
        ),
    ],
    ids=["custom", "server-tool-dropped", "only-server-tools", "name-made-valid"],
)
def test_tools(tools: list[dict[str, Any]], expected: list[dict[str, Any]] | None) -> None:
    assert translate(body([user("x")], tools=tools)).get("tools") == expected


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            {"tool_choice": "required", "parallel_tool_calls": False},
        ),
        (
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            {
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "parallel_tool_calls": False,
            },
        ),
        ({"type": "auto", "disable_parallel_tool_use": False}, {"tool_choice": "auto"}),
        (None, {}),
    ],
)
def test_tool_choice(choice: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    extra = {"tool_choice": choice} if choice is not None else {}
    payload = translate(body([user("x")], tools=[WEATHER, WEB_SEARCH], **extra))
    got = {k: payload[k] for k in ("tool_choice", "parallel_tool_calls") if k in payload}
    assert got == expected


@pytest.mark.parametrize(
    ("tools", "choice", "message"),
    [
        ([WEATHER, WEB_SEARCH], {"type": "tool", "name": "web_search"}, r"^tool_choice\.name"),
        ([WEATHER], {"type": "tool", "name": "nope"}, r"^tool_choice\.name"),
        ([WEB_SEARCH], {"type": "any"}, r"^tool_choice\.type"),
    ],
)
def test_tool_choice_that_cannot_be_honoured(
    tools: list[dict[str, Any]], choice: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        translate(body([user("x")], tools=tools, tool_choice=choice))


@pytest.mark.parametrize("choice", [{"type": "auto"}, {"type": "none"}])
def test_tool_choice_omitted_without_forwarded_tools(choice: dict[str, Any]) -> None:
    assert "tool_choice" not in translate(body([user("x")], tools=[WEB_SEARCH], tool_choice=choice))
    assert "tool_choice" not in translate(body([user("x")], tool_choice=choice))


@pytest.mark.parametrize(
    ("system", "msgs", "expected"),
    [
        pytest.param(
            None,
            [user("Q"), {"role": "system", "content": "# Environment"}],
            [S("# Environment"), U("Q")],
            id="merge-creates-leading-system",
        ),
        pytest.param(
            "You are terse.",
            [
                user("Q"),
                {"role": "system", "content": "# Environment"},
                assistant("A"),
                user("Q2"),
                {"role": "system", "content": "late"},
            ],
            [S("You are terse.\n\n# Environment\n\nlate"), U("Q"), A("A"), U("Q2")],
            id="merge-appends-in-order",
        ),
    ],
)
def test_mid_system_merge_for_strict_templates(
    system: str | None, msgs: list[dict[str, Any]], expected: list[dict[str, Any]]
) -> None:
    extra = {"system": system} if system else {}
    assert messages_of(msgs, route(mid_system="merge"), **extra) == expected


# ==============================================================================================
# Messages (protocol.md §9.2, §9.4, §9.5)

LONG_ID = "toolu_" + "x" * 70
LONG_CALL = call_id_to_upstream(LONG_ID)
SYS_MSG = {"role": "system", "content": "# Environment", "output_config": {"effort": "medium"}}

MESSAGE_CASES = [
    pytest.param([user("Hello")], [U("Hello")], id="user-string"),
    pytest.param([user(text("a"), text("b"))], [U("a\nb")], id="user-text-blocks-joined"),
    pytest.param([user(text(""), text("b"))], [U("b")], id="empty-text-dropped"),
    pytest.param([user(""), user(text("")), user("Hi")], [U("Hi")], id="empty-messages-omitted"),
    pytest.param(
        [user("Q"), assistant(text("A1"), text(""), text("A2")), user("Q2")],
        [U("Q"), A("A1\nA2"), U("Q2")],
        id="assistant-blocks-joined",
    ),
    pytest.param([user("Q"), assistant("")], [U("Q")], id="empty-assistant-omitted"),
    # mid-conversation system messages (claude-code.md §3) stay system messages, in place
    pytest.param([user("Q"), SYS_MSG], [U("Q"), S("# Environment")], id="system-message-last"),
    pytest.param(
        [
            user("Q"),
            {
                "role": "system",
                "content": [
                    text("env", cache_control={"type": "ephemeral"}),
                    text(""),
                    text("more"),
                ],
            },
            assistant("A"),
        ],
        [U("Q"), S("env\n\nmore"), A("A")],
        id="system-message-blocks",
    ),
    pytest.param(
        [user("Q"), {"role": "system", "content": [], "output_config": {"effort": "low"}}],
        [U("Q")],
        id="system-message-empty-omitted",
    ),
    # images and documents (§9.4)
    pytest.param(
        [user(image_b64(), text("what is this?"))],
        [U([img(PNG), tx("what is this?")])],
        id="image-base64",
    ),
    pytest.param(
        [user({"type": "image", "source": {"type": "url", "url": "https://e.test/a.jpg"}})],
        [U([img("https://e.test/a.jpg")])],
        id="image-url",
    ),
    pytest.param(
        [user("Q"), assistant(image_b64(), text("A"))],
        [U("Q"), A("A")],
        id="assistant-image-dropped",
    ),
    pytest.param(
        [
            user(
                {"type": "document", "source": _PDF, "title": "Q3 report", "context": "finance"},
                text("sum up"),
            )
        ],
        # title and context beside the file, as text (issue 15 item 7)
        [U([tx("Q3 report\nfinance"), pdf("Q3 report.pdf"), tx("sum up")])],
        id="pdf-file-part",
    ),
    pytest.param(
        [user({"type": "document", "source": _PDF})], [U([pdf("document.pdf")])], id="pdf-untitled"
    ),
    pytest.param(
        [
            user(
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "body"},
                    "title": "Notes",
                    "context": "from the wiki",
                }
            )
        ],
        [U("Notes\nfrom the wiki\nbody")],
        id="text-document",
    ),
    pytest.param(
        [
            user(
                {
                    "type": "document",
                    "title": "Deck",
                    "source": {"type": "content", "content": [text("slide 1"), image_b64("AAAA")]},
                }
            )
        ],
        [U([tx("Deck"), tx("slide 1"), img("data:image/png;base64,AAAA")])],
        id="content-document-with-image",
    ),
    pytest.param(
        [
            user(
                {
                    "type": "search_result",
                    "source": "https://e.test/doc",
                    "title": "Doc",
                    "content": [text("snippet")],
                },
                {"type": "tool_reference", "tool_name": "WebFetch"},
            )
        ],
        [U("Doc\nhttps://e.test/doc\nsnippet\nTool loaded: WebFetch")],
        id="search-result-and-tool-reference",
    ),
    pytest.param(
        [
            user("Q"),
            assistant(
                {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}, text("A")
            ),
        ],
        [U("Q"), A("[web_search {}]\nA")],
        id="server-tool-use-as-text",
    ),
    # tool calls and results (§9.2, §9.5, §10.11)
    pytest.param(
        [
            user("weather?"),
            assistant(text("Checking."), tool_use("t1", input={"city": "Paris"})),
            user(tool_result("t1", "18C")),
        ],
        [U("weather?"), A("Checking.", fn("t1", '{"city":"Paris"}')), T("t1", "18C")],
        id="round-trip",
    ),
    pytest.param(
        [user("Q"), assistant(tool_use("t1")), user(tool_result("t1"))],
        [U("Q"), A("", fn("t1")), T("t1")],
        id="tool-only-content-empty-string",
    ),
    pytest.param(
        [
            user("Q"),
            assistant(tool_use("t1"), tool_use("t2", name="get_time")),
            user(tool_result("t2", "noon"), tool_result("t1", "sunny"), text("thanks")),
        ],
        [
            U("Q"),
            A("", fn("t1"), fn("t2", name="get_time")),
            T("t1", "sunny"),
            T("t2", "noon"),
            U("thanks"),
        ],
        id="parallel-answered-in-call-order-then-user-text",
    ),
    pytest.param(
        [user("Q"), assistant(tool_use("t1"), tool_use("t2")), user(tool_result("t1"))],
        [U("Q"), A("", fn("t1"), fn("t2")), T("t1"), T("t2", "(no result)")],
        id="unanswered-call-gets-no-result",
    ),
    pytest.param(
        [user("Q"), assistant(text("Let me look."), tool_use("t1"))],
        [U("Q"), A("Let me look.", fn("t1")), T("t1", "(no result)")],
        id="trailing-assistant-call-answered",
    ),
    pytest.param(
        [user(tool_result("ghost", "x"), text("hi"))],
        [U("hi")],
        id="orphan-result-dropped",
    ),
    pytest.param(
        [
            user("Q"),
            assistant(tool_use("t1")),
            user(tool_result("t1", "first")),
            assistant("A"),
            user(tool_result("t1", "again"), text("more")),
        ],
        [U("Q"), A("", fn("t1")), T("t1", "first"), A("A"), U("more")],
        id="second-result-for-a-call-dropped",
    ),
    pytest.param(
        [user("Q"), assistant(tool_use("t1")), user("wait"), user(tool_result("t1", "late"))],
        [U("Q"), A("", fn("t1")), T("t1", "late"), U("wait")],
        id="late-result-pulled-forward",
    ),
    pytest.param(
        [user(tool_result("t1", "early")), assistant(tool_use("t1")), user("next")],
        [A("", fn("t1")), T("t1", "(no result)"), U("next")],
        id="result-before-its-call",
    ),
    pytest.param(
        [
            user("Q"),
            assistant(tool_use("t1")),
            user(tool_result("t1", "a")),
            assistant(tool_use("t1"), tool_use("t2")),
            user(tool_result("t2", "b")),
        ],
        [U("Q"), A("", fn("t1")), T("t1", "a"), A("", fn("t2")), T("t2", "b")],
        id="repeated-call-id-skipped",
    ),
    pytest.param(
        [user("Q"), assistant(tool_use(LONG_ID)), user(tool_result(LONG_ID, "r"))],
        [U("Q"), A("", fn(LONG_CALL)), T(LONG_CALL, "r")],
        id="long-id-mapped-on-both-sides",
    ),
    pytest.param(
        [user("Q"), assistant(tool_use("t1", name="github.create_issue")), user(tool_result("t1"))],
        [U("Q"), A("", fn("t1", name=upstream_tool_name("github.create_issue"))), T("t1")],
        id="tool-name-made-valid",
    ),
    pytest.param(
        [
            user("Q"),
            assistant({"type": "tool_use", "id": "t1", "name": "f"}),
            user(tool_result("t1")),
        ],
        [U("Q"), A("", fn("t1", name="f")), T("t1")],
        id="input-absent-is-empty-object",
    ),
    pytest.param(
        [user("Q"), assistant(tool_use("t1", input={"n": 2**70})), user(tool_result("t1"))],
        [U("Q"), A("", fn("t1", '{"n":1180591620717411303424}')), T("t1")],
        id="wide-integer-input",
    ),
    # tool result content (§9.5): text only in tool messages
    pytest.param(
        [user("Q"), assistant(tool_use("t1")), user(tool_result("t1", "denied", is_error=True))],
        [U("Q"), A("", fn("t1")), T("t1", "[tool error] denied")],
        id="is-error-prefix",
    ),
    pytest.param(
        [user("Q"), assistant(tool_use("t1")), user(tool_result("t1", "", is_error=False))],
        [U("Q"), A("", fn("t1")), T("t1", "(empty)")],
        id="empty-result",
    ),
    pytest.param(
        [user("Q"), assistant(tool_use("t1")), user(tool_result("t1", None))],
        [U("Q"), A("", fn("t1")), T("t1", "(empty)")],
        id="absent-result-content",
    ),
    pytest.param(
        [
            user("Q"),
            assistant(tool_use("t1", name="ToolSearch")),
            user(
                tool_result(
                    "t1",
                    [
                        {"type": "tool_reference", "tool_name": "WebFetch"},
                        text("and"),
                        {"type": "tool_reference", "tool_name": "SendMessage"},
                    ],
                ),
                text("Tool loaded."),
            ),
        ],
        [
            U("Q"),
            A("", fn("t1", name="ToolSearch")),
            T("t1", "Tool loaded: WebFetch\nand\nTool loaded: SendMessage"),
            U("Tool loaded."),
        ],
        id="text-like-list-joined",
    ),
    pytest.param(
        [
            user("Q"),
            assistant(tool_use("t1", name="screenshot")),
            user(tool_result("t1", [text("Here:"), image_b64()]), text("what do you see?")),
        ],
        [
            U("Q"),
            A("", fn("t1", name="screenshot")),
            T("t1", "Here:"),
            U([tx("[attachments of tool call t1]"), img(PNG), tx("what do you see?")]),
        ],
        id="result-image-moved-and-merged-with-user-text",
    ),
    pytest.param(
        [
            user("Q"),
            assistant(tool_use("t1"), tool_use("t2"), tool_use("t3")),
            user(
                tool_result("t1", [image_b64("AAAA")], is_error=True),
                tool_result("t2", "plain"),
                tool_result("t3", [{"type": "document", "source": _PDF, "title": "r"}]),
            ),
            assistant("done"),
        ],
        [
            U("Q"),
            A("", fn("t1"), fn("t2"), fn("t3")),
            T("t1", "[tool error]"),
            T("t2", "plain"),
            T("t3", "r"),  # the PDF's title, as text beside it (issue 15)
            U(
                [
                    tx("[attachments of tool call t1]"),
                    img("data:image/png;base64,AAAA"),
                    tx("[attachments of tool call t3]"),
                    pdf("r.pdf"),
                ]
            ),
            A("done"),
        ],
        id="attachments-in-one-user-message-after-the-last-tool-message",
    ),
    # earlier thinking: dropped unless the route sends it back (thinking_field)
    pytest.param(
        [user("Q"), assistant(thinking("sig", "hmm"), text("A"))],
        [U("Q"), A("A")],
        id="thinking-dropped-by-default",
    ),
]


@pytest.mark.parametrize(("msgs", "expected"), MESSAGE_CASES)
def test_messages(msgs: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert messages_of(msgs) == expected


TEXT_ONLY = route(images=False)


@pytest.mark.parametrize(
    ("msgs", "expected"),
    [
        pytest.param(
            [user(image_b64(), text("what is this?"))],
            [U(f"{IMAGE_OMITTED}\nwhat is this?")],
            id="user-image",
        ),
        pytest.param(
            [
                user("Q"),
                assistant(tool_use("t1")),
                user(tool_result("t1", [text("Here:"), image_b64()])),
            ],
            [U("Q"), A("", fn("t1")), T("t1", f"Here:\n{IMAGE_OMITTED}")],
            id="tool-result-image-noted-in-place",
        ),
        pytest.param(
            [user({"type": "document", "source": _PDF}, text("x"))],
            [U([pdf("document.pdf"), tx("x")])],
            id="pdf-still-a-file-part",
        ),
    ],
)
def test_text_only_route(msgs: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert messages_of(msgs, TEXT_ONLY) == expected


@pytest.mark.parametrize(
    ("signature", "field"),
    [
        ("", "reasoning_content"),
        ("EqQBCkgIARABGAIiQ-real-claude", "reasoning"),
        ("gw1.x.y", "reasoning_content"),
    ],
)
def test_thinking_sent_back_under_the_route_field(signature: str, field: str) -> None:
    msgs = [
        user("Q"),
        assistant(
            thinking(signature, "first"),
            {"type": "redacted_thinking", "data": "opaque"},
            thinking(signature, ""),
            thinking(signature, "second"),
            text("A"),
            tool_use("t1"),
        ),
        user(tool_result("t1")),
        assistant(thinking(signature, "only thought")),  # no text, no call: nothing to send
    ]
    assert messages_of(msgs, route(thinking_field=field)) == [
        U("Q"),
        A("A", fn("t1"), **{field: "first\n\nsecond"}),
        T("t1"),
    ]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
            r"^messages\.0\.content\.0\.source: file_id",
        ),
        (
            {"type": "document", "source": {"type": "url", "url": "https://e.test/a.pdf"}},
            r"^messages\.0\.content\.0\.source: PDF documents by URL",
        ),
        (
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "text/csv", "data": "YQ=="},
            },
            r"^messages\.0\.content\.0\.source\.media_type",
        ),
    ],
)
def test_unsupported_sources(block: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        translate(body([user(block)]))


def test_unsupported_source_in_a_tool_result_names_its_path() -> None:
    bad = {"type": "image", "source": {"type": "file", "file_id": "f"}}
    msgs = [user("Q"), assistant(tool_use("t1")), user(text("x"), tool_result("t1", [bad]))]
    with pytest.raises(InvalidRequestError, match=r"^messages\.2\.content\.1\.content\.0\.source"):
        translate(body(msgs))
    with pytest.raises(InvalidRequestError, match=r"^messages\.2\.content\.1\.content\.0\.source"):
        translate(body(msgs), TEXT_ONLY)


# ==============================================================================================
# The Claude Code shape (claude-code.md §3, §5)


@pytest.mark.parametrize("turns", [1, 2, 7])
def test_claude_code_requests(turns: int) -> None:
    req = decode(claude_code_request(turns=turns))
    payload = to_chat(
        req, route(max_output_tokens=32768, max_tokens_field="max_tokens"), SIGNER, stream=True
    )
    validate_chat_request(payload)
    assert payload["max_tokens"] == 32768
    assert payload["stream_options"] == {"include_usage": True}
    msgs = payload["messages"]
    assert msgs[0]["role"] == "system"
    assert msgs[0]["content"].startswith(
        "You are a Claude agent, built on Anthropic's Claude Agent SDK."
    )
    assert "x-anthropic-billing-header" not in json.dumps(payload)
    # [user, system, (assistant, tool…, user?)…]: the environment stays a system message.
    assert [m["role"] for m in msgs[1:3]] == ["user", "system"]
    assert msgs[2]["content"].startswith("# Environment")
    calls = [c["id"] for m in msgs if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    answered = [m["tool_call_id"] for m in msgs if m["role"] == "tool"]
    assert calls == answered and len(calls) >= turns - 1
    assert all(t["type"] == "function" for t in payload["tools"])
    assert "$schema" not in json.dumps(payload["tools"])
