"""Tests for gateway.dialects.responses.request and gateway.anthropic.tool_schema.

Every request is decoded from JSON bytes with the real ``REQUEST_DECODER``, so the msgspec
structs are exercised as in production. Expected payloads are exact. References are to
shared/protocol.md (§) and shared/claude-code.md (CC §).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from gateway.anthropic.ids import call_id_to_upstream
from gateway.anthropic.request import session_id_from
from gateway.anthropic.signatures import Signer
from gateway.anthropic.tool_schema import clean_schema, upstream_tool_name
from gateway.anthropic.tools import tool_name_map
from gateway.dialects.responses.request import to_responses
from gateway.errors import InvalidRequestError
from gateway.schemas.anthropic import REQUEST_DECODER, MessagesRequest, ToolUseBlock
from gateway.settings import Route
from tests.fixtures.claude_code import DEFAULT_SESSION_ID, claude_code_request

CORPUS = Path(os.environ.get("GATEWAY_CORPUS", "/work/shared/corpus"))

SIGNER = Signer(b"test-signing-key-0123456789")
OTHER_SIGNER = Signer(b"another-key-abcdefghijklmnop")

ROUTE = Route(
    name="default:gpt-5",
    dialect="responses",
    base_url="https://api.example.test/v1",
    api_key=None,
    headers={},
    upstream_model="gpt-5",
)


def route(**kw: Any) -> Route:
    return msgspec.structs.replace(ROUTE, **kw)


def decode(body: dict[str, Any]) -> MessagesRequest:
    # msgspec, not orjson: the wide-integer case needs more than 64 bits.
    return REQUEST_DECODER.decode(msgspec.json.encode(body))


def body(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": messages, **extra}


def translate(
    b: dict[str, Any],
    r: Route = ROUTE,
    *,
    stream: bool = False,
    session_id: str | None = None,
    signer: Signer = SIGNER,
) -> dict[str, Any]:
    payload = to_responses(decode(b), r, signer, stream=stream, session_id=session_id)
    validate_responses_request(payload)
    return payload


def input_of(messages: list[dict[str, Any]], **extra: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = translate(body(messages, **extra))["input"]
    return result


def sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


# --- Anthropic request builders ---------------------------------------------------------------


def _message(role: str, content: tuple[Any, ...]) -> dict[str, Any]:
    """One string argument → string content; block arguments → a block list."""
    if len(content) == 1 and isinstance(content[0], str):
        return {"role": role, "content": content[0]}
    return {"role": role, "content": list(content)}


def user(*content: Any) -> dict[str, Any]:
    return _message("user", content)


def assistant(*content: Any) -> dict[str, Any]:
    return _message("assistant", content)


def text(t: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": t, **extra}


def tool_use(id: str, name: str = "get_weather", input: Any = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": name, "input": {} if input is None else input}


def tool_result(id: str, content: Any = "ok", **extra: Any) -> dict[str, Any]:
    out = {"type": "tool_result", "tool_use_id": id, **extra}
    if content is not None:
        out["content"] = content
    return out


def image_b64(data: str = "iVBORw0KGgo=", media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def thinking(signature: str, thought: str = "") -> dict[str, Any]:
    return {"type": "thinking", "thinking": thought, "signature": signature}


# --- Responses expectations -------------------------------------------------------------------


def in_text(t: str) -> dict[str, Any]:
    return {"type": "input_text", "text": t}


def in_image(url: str) -> dict[str, Any]:
    return {"type": "input_image", "image_url": url, "detail": "auto"}


def pdf_part(filename: str) -> dict[str, Any]:
    return {
        "type": "input_file",
        "filename": filename,
        "file_data": "data:application/pdf;base64,JVBERi0x",
    }


def um(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def u(*texts: str) -> dict[str, Any]:
    return {"role": "user", "content": [in_text(t) for t in texts]}


def a(*texts: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": [{"type": "output_text", "text": t, "annotations": []} for t in texts],
    }


def dev(*texts: str) -> dict[str, Any]:
    return {"role": "developer", "content": [in_text(t) for t in texts]}


def fc(call_id: str, args: str = "{}", name: str = "get_weather") -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": args}


def fco(call_id: str, output: Any = "ok") -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def rs(rs_id: str, enc: str, summary: str = "") -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": rs_id,
        "summary": [{"type": "summary_text", "text": summary}] if summary else [],
        "encrypted_content": enc,
    }


# --- A validator of the Responses input rules (protocol.md §5 "Validation facts", §10.10) ------

_ID_PREFIX = {"reasoning": "rs", "function_call": "fc", "message": "msg"}
_ID_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def validate_responses_request(payload: dict[str, Any]) -> None:
    """Raise AssertionError when ``payload`` breaks a rule OpenAI enforces with a 400."""
    if "max_output_tokens" in payload:
        assert payload["max_output_tokens"] >= 16
    for tool in payload.get("tools", []):
        if tool.get("type") == "function":
            assert _NAME.match(tool["name"]), tool["name"]
    items = payload["input"]
    if isinstance(items, str):
        return
    called: set[str] = set()
    answered: set[str] = set()
    for n, item in enumerate(items):
        kind = item.get("type", "message")
        if "id" in item:
            assert item["id"].startswith(_ID_PREFIX[kind]), (n, item["id"])
            assert _ID_CHARS.match(item["id"]), (n, item["id"])
        if kind == "message":
            assert item["role"] in ("user", "assistant", "system", "developer")
            content = item["content"]
            if isinstance(content, list):
                assert content, f"input[{n}] has empty content"
                for part in content:
                    if item["role"] == "assistant":
                        assert part["type"] in ("output_text", "refusal"), (n, part)
                    else:
                        assert part["type"] in ("input_text", "input_image", "input_file")
                    if part["type"] == "input_image":
                        assert part["detail"] in ("auto", "low", "high", "original")
        elif kind == "function_call":
            assert len(item["call_id"]) <= 64
            assert item["call_id"] not in called, f"duplicate call {item['call_id']}"
            assert isinstance(item["arguments"], str)
            json.loads(item["arguments"])
            called.add(item["call_id"])
        elif kind == "function_call_output":
            assert len(item["call_id"]) <= 64
            assert item["call_id"] in called, f"No tool call found for {item['call_id']}"
            assert item["call_id"] not in answered, f"second output for {item['call_id']}"
            assert isinstance(item["output"], str | list)
            answered.add(item["call_id"])
        elif kind == "reasoning":
            assert isinstance(item["summary"], list)
            assert n + 1 < len(items), "reasoning item without its following item"
            following = items[n + 1]
            assert following.get("type", "message") in ("message", "function_call", "reasoning")
            if following.get("type", "message") == "message":
                assert following["role"] == "assistant"
    assert called == answered, f"No tool output found for {called - answered}"


# ==============================================================================================
# Top-level fields


def test_minimal_request_exact_payload() -> None:
    assert translate(body([user("Hi")])) == {
        "model": "gpt-5",
        "input": [u("Hi")],
        "max_output_tokens": 1024,
        "store": False,
        "stream": False,
    }


@pytest.mark.parametrize("stream", [True, False])
def test_stream_is_the_argument_not_the_body(stream: bool) -> None:
    payload = translate(body([user("Hi")], stream=not stream), stream=stream)
    assert payload["stream"] is stream
    assert payload["store"] is False


@pytest.mark.parametrize(
    ("max_tokens", "route_limit", "expected"),
    [
        pytest.param(0, None, 16, id="zero-clamped-to-16"),
        pytest.param(1, None, 16, id="probe-clamped-to-16"),
        pytest.param(15, 32000, 16, id="below-min"),
        pytest.param(16, None, 16, id="min"),
        pytest.param(1000, 32000, 1000, id="under-route-limit"),
        pytest.param(128000, 32000, 32000, id="claude-code-128000-clamped"),
        pytest.param(128000, None, 128000, id="no-route-limit"),
    ],
)
def test_max_output_tokens(max_tokens: int, route_limit: int | None, expected: int) -> None:
    payload = translate(
        body([user("Hi")], max_tokens=max_tokens), route(max_output_tokens=route_limit)
    )
    assert payload["max_output_tokens"] == expected


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        pytest.param("Be brief.", "Be brief.", id="string"),
        pytest.param("", None, id="empty-string"),
        pytest.param(None, None, id="absent"),
        pytest.param([text("One."), text("Two.")], "One.\n\nTwo.", id="blocks-joined"),
        pytest.param(
            [
                text("x-anthropic-billing-header: cc_version=2.1.330.03d; cc_entrypoint=sdk-cli;"),
                text("Agent.", cache_control={"type": "ephemeral"}),
                text("Main prompt.", cache_control={"type": "ephemeral"}),
            ],
            "Agent.\n\nMain prompt.",
            id="billing-header-dropped",
        ),
        pytest.param(
            [text("x-anthropic-billing-header: cc_version=2.1.330.440;")],
            None,
            id="only-billing-header",
        ),
        pytest.param([text(""), text("Kept.")], "Kept.", id="empty-block-dropped"),
        pytest.param([], None, id="empty-list"),
    ],
)
def test_instructions(system: Any, expected: str | None) -> None:
    b = body([user("Hi")])
    if system is not None:
        b["system"] = system
    payload = translate(b)
    if expected is None:
        assert "instructions" not in payload
    else:
        assert payload["instructions"] == expected


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        pytest.param(True, {"temperature": 0.2, "top_p": 0.9}, id="sampling-route"),
        pytest.param(False, {}, id="reasoning-model-route"),
    ],
)
def test_sampling_parameters(sampling: bool, expected: dict[str, Any]) -> None:
    payload = translate(
        body(
            [user("Hi")],
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            stop_sequences=["\n\nHuman:"],
        ),
        route(sampling=sampling),
    )
    got = {k: payload[k] for k in ("temperature", "top_p") if k in payload}
    assert got == expected
    # Never sent: top_k (no field) and stop (Responses has none; emulated on the way back).
    for key in ("top_k", "stop", "stop_sequences"):
        assert key not in payload


@pytest.mark.parametrize(
    ("tier", "expected"),
    [("auto", "auto"), ("standard_only", "default"), ("priority", None), (None, None)],
)
def test_service_tier(tier: str | None, expected: str | None) -> None:
    b = body([user("Hi")])
    if tier is not None:
        b["service_tier"] = tier
    assert translate(b).get("service_tier") == expected


def test_metadata_user_id_hashed_into_safety_identifier_and_cache_key() -> None:
    payload = translate(body([user("Hi")], metadata={"user_id": "user-42"}))
    assert payload["safety_identifier"] == sha("user-42")[:32]
    assert payload["prompt_cache_key"] == "cc-" + sha("user-42")[:32]
    assert "user-42" not in orjson.dumps(payload).decode()


def test_no_metadata_no_identity_fields() -> None:
    payload = translate(body([user("Hi")]))
    assert "safety_identifier" not in payload
    assert "prompt_cache_key" not in payload
    assert "metadata" not in payload
    assert "user" not in payload


def test_session_id_argument_wins_for_cache_key() -> None:
    payload = translate(body([user("Hi")], metadata={"user_id": "user-42"}), session_id="s-1")
    assert payload["prompt_cache_key"] == "cc-" + sha("s-1")[:32]
    assert payload["safety_identifier"] == sha("user-42")[:32]


def test_output_config_json_schema_format() -> None:
    # already strict (every property required, closed): sent as it is, strict
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    payload = translate(
        body([user("Hi")], output_config={"format": {"type": "json_schema", "schema": schema}})
    )
    assert payload["text"] == {
        "format": {"type": "json_schema", "name": "output", "schema": schema, "strict": True}
    }


def test_ignored_fields() -> None:
    b = body(
        [user(text("Hi", cache_control={"type": "ephemeral"}))],
        cache_control={"type": "ephemeral", "ttl": "1h"},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        container="ctr_1",
        brand_new_field={"x": 1},
    )
    assert translate(b) == translate(body([user("Hi")]))


@pytest.mark.parametrize(
    ("extra", "tier"),
    [({}, None), ({"service_tier": "auto"}, "auto"), ({"service_tier": "standard_only"}, "default"),
     ({"speed": "fast"}, "priority"), ({"speed": "fast", "service_tier": "standard_only"},
                                       "priority"), ({"speed": "standard"}, None)],
)  # fmt: skip
def test_service_tier_and_fast_mode(extra: dict[str, Any], tier: str | None) -> None:
    assert translate(body([user("Hi")], **extra)).get("service_tier") == tier


# ==============================================================================================
# session_id_from


_CC_USER_ID = (
    '{"device_id":"' + "ab" * 32 + '","account_uuid":"","session_id":"5e09514e-10fb-4bf2"}'
)


@pytest.mark.parametrize(
    ("metadata", "header", "expected"),
    [
        pytest.param({"user_id": _CC_USER_ID}, "hdr-session", "hdr-session", id="header-wins"),
        pytest.param({"user_id": _CC_USER_ID}, None, "5e09514e-10fb-4bf2", id="cc-json-string"),
        pytest.param({"user_id": _CC_USER_ID}, "", "5e09514e-10fb-4bf2", id="empty-header"),
        pytest.param({"user_id": '{"device_id":"d"}'}, None, '{"device_id":"d"}', id="json-no-sid"),
        pytest.param({"user_id": '{"session_id":""}'}, None, '{"session_id":""}', id="empty-sid"),
        pytest.param({"user_id": "{not json"}, None, "{not json", id="bad-json-raw"),
        pytest.param({"user_id": "[1,2]"}, None, "[1,2]", id="non-object-raw"),
        pytest.param({"user_id": "user-42"}, None, "user-42", id="raw-user-id"),
        pytest.param({"user_id": ""}, None, None, id="empty-user-id"),
        pytest.param({"user_id": None}, None, None, id="null-user-id"),
        pytest.param({}, None, None, id="no-user-id"),
        pytest.param(None, None, None, id="no-metadata"),
        pytest.param(None, "hdr", "hdr", id="header-only"),
    ],
)
def test_session_id_from(metadata: Any, header: str | None, expected: str | None) -> None:
    b = body([user("Hi")])
    if metadata is not None:
        b["metadata"] = metadata
    assert session_id_from(decode(b), header) == expected


# ==============================================================================================
# Conversation structure (protocol.md §9.2)


LONG_ID = "toolu_" + "x" * 70
LONG_CALL = call_id_to_upstream(LONG_ID)

_PDF = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}

INPUT_CASES = [
    pytest.param([user("Hello")], [u("Hello")], id="user-string"),
    pytest.param([user(text("a"), text("b"))], [u("a", "b")], id="user-blocks"),
    pytest.param([user(text(""), text("b"))], [u("b")], id="empty-text-dropped"),
    pytest.param([user(""), user("Hi")], [u("Hi")], id="empty-string-message-omitted"),
    pytest.param([user(text("")), user("Hi")], [u("Hi")], id="message-empty-after-drop"),
    pytest.param(
        [user("Q"), assistant("A"), user("Q2")], [u("Q"), a("A"), u("Q2")], id="assistant-string"
    ),
    pytest.param(
        [user("Q"), assistant(text("A1"), text(""), text("A2"))],
        [u("Q"), a("A1", "A2")],
        id="assistant-blocks-one-message",
    ),
    pytest.param(
        [user("a"), user("b"), assistant("c"), assistant("d")],
        [u("a"), u("b"), a("c"), a("d")],
        id="consecutive-same-role-kept-separate",
    ),
    # role: "system" inside messages (CC §3): developer message in place
    pytest.param(
        [user("Q"), {"role": "system", "content": "# Environment", "output_config": {}}],
        [u("Q"), dev("# Environment")],
        id="system-message-string-last",
    ),
    pytest.param(
        [
            user("Q"),
            {
                "role": "system",
                "content": [text("env", cache_control={"type": "ephemeral"}), text("more")],
                "output_config": {"effort": "medium"},
            },
            assistant("A"),
        ],
        [u("Q"), dev("env", "more"), a("A")],
        id="system-message-blocks-in-place",
    ),
    pytest.param(
        [user("Q"), {"role": "system", "content": [], "output_config": {"effort": "low"}}],
        [u("Q")],
        id="system-message-empty-list-omitted",
    ),
    pytest.param(
        [user("Q"), {"role": "system", "content": ""}], [u("Q")], id="system-message-empty-str"
    ),
    # images (§9.4)
    pytest.param(
        [user(image_b64(), text("what is this?"))],
        [um(in_image("data:image/png;base64,iVBORw0KGgo="), in_text("what is this?"))],
        id="image-base64",
    ),
    pytest.param(
        [user({"type": "image", "source": {"type": "url", "url": "https://e.test/a.jpg"}})],
        [um(in_image("https://e.test/a.jpg"))],
        id="image-url",
    ),
    pytest.param(
        [user("Q"), assistant(image_b64(), text("A"))],
        [u("Q"), a("A")],
        id="assistant-image-dropped",
    ),
    # documents (§9.4)
    pytest.param(
        [user({"type": "document", "source": _PDF, "title": "Q3 report", "context": "Q3"})],
        # title and context beside the file, as text (issue 15 item 7)
        [um(in_text("Q3 report\nQ3"), pdf_part("Q3 report.pdf"))],
        id="pdf-base64-title",
    ),
    pytest.param(
        [user({"type": "document", "source": _PDF})],
        [um(pdf_part("document.pdf"))],
        id="pdf-base64-untitled",
    ),
    pytest.param(
        [user({"type": "document", "source": _PDF, "title": "Scan.PDF"})],
        [um(in_text("Scan.PDF"), pdf_part("Scan.PDF"))],
        id="pdf-title-already-pdf",
    ),
    pytest.param(
        [user({"type": "document", "source": {"type": "url", "url": "https://e.test/a.pdf"}})],
        [um({"type": "input_file", "file_url": "https://e.test/a.pdf"})],
        id="pdf-url",
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
        [u("Notes\nfrom the wiki\nbody")],
        id="text-document-title-context",
    ),
    pytest.param(
        [user({"type": "document", "source": {"type": "text", "data": "body"}})],
        [u("body")],
        id="text-document-bare",
    ),
    pytest.param(
        [user({"type": "document", "source": {"type": "content", "content": "c"}, "title": "T"})],
        [u("T\nc")],
        id="content-document-string",
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
        [um(in_text("Deck"), in_text("slide 1"), in_image("data:image/png;base64,AAAA"))],
        id="content-document-with-image",
    ),
    # search results and tool references
    pytest.param(
        [
            user(
                {
                    "type": "search_result",
                    "source": "https://e.test/doc",
                    "title": "Doc",
                    "content": [text("first"), text("second")],
                }
            )
        ],
        [u("Doc\nhttps://e.test/doc\nfirst\nsecond")],
        id="search-result",
    ),
    pytest.param(
        [user({"type": "tool_reference", "tool_name": "WebFetch"})],
        [u("Tool loaded: WebFetch")],
        id="tool-reference-in-user",
    ),
    # tool use / results (§9.2, §9.5)
    pytest.param(
        [
            user("Weather?"),
            assistant(tool_use("toolu_1", input={"city": "Paris", "n": 9007199254740991})),
            user(tool_result("toolu_1", "18C")),
        ],
        [
            u("Weather?"),
            fc("toolu_1", '{"city":"Paris","n":9007199254740991}'),
            fco("toolu_1", "18C"),
        ],
        id="tool-round-trip",
    ),
    pytest.param(
        [
            user("Q"),
            assistant(
                text("Checking both."),
                tool_use("t1"),
                text("And then:"),
                tool_use("t2", "lookup", {"q": "é ✓"}),
                text("Done."),
            ),
            user(tool_result("t1"), tool_result("t2", "r2")),
        ],
        [
            u("Q"),
            a("Checking both."),
            fc("t1"),
            a("And then:"),
            fc("t2", '{"q":"é ✓"}', "lookup"),
            a("Done."),
            fco("t1"),
            fco("t2", "r2"),
        ],
        id="text-beside-tool-calls-kept-in-order",
    ),
    pytest.param(
        [
            user("Q"),
            assistant(tool_use("t1")),
            user(text("Thanks, now also..."), tool_result("t1", "res"), text("more")),
        ],
        [u("Q"), fc("t1"), fco("t1", "res"), u("Thanks, now also...", "more")],
        id="tool-output-before-user-text",
    ),
    pytest.param(
        [
            user("Q"),
            assistant({"type": "tool_use", "id": "t1", "name": "get_weather"}),
            user(tool_result("t1")),
        ],
        [u("Q"), fc("t1", "{}"), fco("t1")],
        id="tool-use-without-input",
    ),
    pytest.param(
        [user("Q"), assistant(tool_use(LONG_ID)), user(tool_result(LONG_ID))],
        [u("Q"), fc(LONG_CALL), fco(LONG_CALL)],
        id="long-tool-use-id-mapped-on-both-sides",
    ),
    # orphans (§9.2)
    pytest.param(
        [user(tool_result("ghost", "x"), text("Hi"))],
        [u("Hi")],
        id="orphan-output-dropped",
    ),
    pytest.param(
        [
            user(tool_result("t1", "early")),
            assistant(tool_use("t1")),
            user(tool_result("t1", "late")),
        ],
        [fc("t1"), fco("t1", "late")],
        id="output-before-its-call-dropped",
    ),
    pytest.param(
        [
            user("Q"),
            assistant(tool_use("t1")),
            user(tool_result("t1", "one"), tool_result("t1", "two")),
        ],
        [u("Q"), fc("t1"), fco("t1", "one")],
        id="duplicate-output-dropped",
    ),
    pytest.param(
        [
            user("Q"),
            assistant(text("Let me check."), tool_use("t1"), tool_use("t2")),
            user(tool_result("t2", "r2")),
            assistant("Answer"),
            user("Next"),
        ],
        [
            u("Q"),
            a("Let me check."),
            fc("t1"),
            fc("t2"),
            fco("t1", "(no result)"),
            fco("t2", "r2"),
            a("Answer"),
            u("Next"),
        ],
        id="unanswered-call-mid-conversation-synthesised",
    ),
    pytest.param(
        [user("Q"), assistant(tool_use("t1")), user("never mind"), assistant("ok")],
        [u("Q"), fc("t1"), fco("t1", "(no result)"), u("never mind"), a("ok")],
        id="user-ignored-the-call",
    ),
    pytest.param(
        [user("Q"), assistant(text("Calling"), tool_use("t1"))],
        [u("Q"), a("Calling"), fc("t1"), fco("t1", "(no result)")],
        id="prefill-with-unanswered-call-synthesised",
    ),
    # server-tool artefacts (§1.3)
    pytest.param(
        [
            user("Search"),
            assistant(
                text("Searching."),
                {
                    "type": "server_tool_use",
                    "id": "srvtoolu_1",
                    "name": "web_search",
                    "input": {"query": "q"},
                },
                {
                    "type": "web_search_tool_result",
                    "tool_use_id": "srvtoolu_1",
                    "content": [
                        {
                            "type": "web_search_result",
                            "url": "https://e.test/a",
                            "title": "A",
                            "encrypted_content": "opaque",
                            "page_age": "2 days ago",
                        }
                    ],
                },
                text("Found it."),
            ),
            user("Thanks"),
        ],
        [
            u("Search"),
            a(
                "Searching.",
                '[web_search {"query":"q"}]',
                "Search results:\n- A: https://e.test/a (2 days ago)",
                "Found it.",
            ),
            u("Thanks"),
        ],
        id="server-blocks-as-text",
    ),
]


@pytest.mark.parametrize(("messages", "expected"), INPUT_CASES)
def test_input(messages: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert input_of(messages) == expected


TOOL_OUTPUT_CASES = [
    pytest.param("plain", None, "plain", id="string"),
    pytest.param("", None, "(empty)", id="empty-string"),
    pytest.param(None, None, "(empty)", id="missing"),
    pytest.param([], None, "(empty)", id="empty-list"),
    pytest.param([text("a"), text("b")], None, "a\nb", id="texts-joined"),
    pytest.param([text("")], None, "(empty)", id="only-empty-text"),
    pytest.param(
        [{"type": "tool_reference", "tool_name": "WebFetch"}, text("Tool loaded.")],
        None,
        "Tool loaded: WebFetch\nTool loaded.",
        id="tool-reference-and-text",
    ),
    pytest.param(
        [{"type": "search_result", "source": "s", "title": "t", "content": [text("x")]}],
        None,
        "t\ns\nx",
        id="search-result",
    ),
    pytest.param(
        [text("see image"), image_b64("QQ==")],
        None,
        [
            in_text("see image"),
            in_image("data:image/png;base64,QQ=="),
        ],
        id="with-image-list",
    ),
    pytest.param(
        [{"type": "document", "source": _PDF}, {"type": "tool_reference", "tool_name": "X"}],
        None,
        [
            pdf_part("document.pdf"),
            in_text("Tool loaded: X"),
        ],
        id="with-document-list",
    ),
    pytest.param("denied", True, "[tool error] denied", id="error-string"),
    pytest.param(None, True, "[tool error] (empty)", id="error-empty"),
    pytest.param([text("a"), text("b")], True, "[tool error] a\nb", id="error-texts"),
    pytest.param(
        [text("bad"), image_b64("QQ==")],
        True,
        [
            in_text("[tool error] bad"),
            in_image("data:image/png;base64,QQ=="),
        ],
        id="error-list-first-text-prefixed",
    ),
    pytest.param(
        [image_b64("QQ==")],
        True,
        [
            in_text("[tool error]"),
            in_image("data:image/png;base64,QQ=="),
        ],
        id="error-list-without-text",
    ),
    pytest.param("fine", False, "fine", id="is-error-false"),
]


@pytest.mark.parametrize(("content", "is_error", "expected"), TOOL_OUTPUT_CASES)
def test_tool_result_output(content: Any, is_error: bool | None, expected: Any) -> None:
    extra = {} if is_error is None else {"is_error": is_error}
    items = input_of(
        [user("Q"), assistant(tool_use("t1")), user(tool_result("t1", content, **extra))]
    )
    assert items == [u("Q"), fc("t1"), fco("t1", expected)]


def test_tool_result_never_flattened_into_prose() -> None:
    items = input_of([user("Q"), assistant(tool_use("t1")), user(tool_result("t1", "r"))])
    assert [i.get("type", "message") for i in items] == [
        "message",
        "function_call",
        "function_call_output",
    ]


# ==============================================================================================
# Thinking → reasoning items (protocol.md §9.10)

THINKING_ON = {"thinking": {"type": "enabled", "budget_tokens": 2048}}


def test_genuine_thinking_becomes_reasoning_before_its_following_item() -> None:
    tok1 = SIGNER.encode("rs_1", "ENC1")
    tok2 = SIGNER.encode("rs_2", "ENC2")
    redacted = SIGNER.encode("rs_3", "ENC3")
    items = input_of(
        [
            user("Q"),
            assistant(
                thinking(tok1, "Need the tool."),
                text("Checking."),
                tool_use("t1"),
                thinking(tok2),
                tool_use("t2"),
            ),
            user(tool_result("t1"), tool_result("t2")),
            assistant({"type": "redacted_thinking", "data": redacted}, text("Done.")),
        ],
        **THINKING_ON,
    )
    assert items == [
        u("Q"),
        rs("rs_1", "ENC1", "Need the tool."),
        a("Checking."),
        fc("t1"),
        rs("rs_2", "ENC2"),
        fc("t2"),
        fco("t1"),
        fco("t2"),
        rs("rs_3", "ENC3"),
        a("Done."),
    ]


def _tampered(token: str) -> str:
    body_, _, mac = token[len("gw1.") :].partition(".")
    flipped = body_[:-1] + ("A" if body_[-1] != "A" else "B")
    return f"gw1.{flipped}.{mac}"


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("", id="empty"),
        pytest.param(_tampered(SIGNER.encode("rs_1", "ENC")), id="tampered-payload"),
        pytest.param(SIGNER.encode("rs_1", "ENC")[:-3] + "AAA", id="tampered-mac"),
        pytest.param(OTHER_SIGNER.encode("rs_1", "ENC"), id="other-key"),
        pytest.param("EqEECkYICxgCKkAo3UA4WwDbB8ihhpykVCsPx6iMzwNT", id="real-claude"),
        pytest.param(SIGNER.encode("rs_1", None), id="no-encrypted-content"),
    ],
)
def test_unusable_thinking_dropped(signature: str) -> None:
    items = input_of(
        [user("Q"), assistant(thinking(signature, "thought"), text("A")), user("Q2")],
        **THINKING_ON,
    )
    assert items == [u("Q"), a("A"), u("Q2")]


def test_redacted_thinking_with_foreign_data_dropped() -> None:
    items = input_of(
        [user("Q"), assistant({"type": "redacted_thinking", "data": "EmwKAhgBEgy3"}, text("A"))],
        **THINKING_ON,
    )
    assert items == [u("Q"), a("A")]


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param([], id="thinking-only"),
        pytest.param([text("")], id="only-empty-text-after"),
        pytest.param([image_b64()], id="only-dropped-block-after"),
    ],
)
def test_reasoning_without_following_item_dropped(tail: list[dict[str, Any]]) -> None:
    tok = SIGNER.encode("rs_1", "ENC")
    items = input_of(
        [user("Q"), assistant(text("A"), thinking(tok, "more"), *tail), user("Q2")],
        **THINKING_ON,
    )
    assert items == [u("Q"), a("A"), u("Q2")]


def test_reasoning_dropped_before_synthesised_output_when_last() -> None:
    tok = SIGNER.encode("rs_1", "ENC")
    items = input_of([user("Q"), assistant(tool_use("t1"), thinking(tok))], **THINKING_ON)
    assert items == [u("Q"), fc("t1"), fco("t1", "(no result)")]


@pytest.mark.parametrize(
    ("extra", "r"),
    [
        pytest.param({}, ROUTE, id="request-sends-no-reasoning"),
        pytest.param({"thinking": {"type": "disabled"}}, ROUTE, id="thinking-disabled"),
        pytest.param(THINKING_ON, route(reasoning=False), id="route-without-reasoning"),
    ],
)
def test_reasoning_items_only_when_reasoning_is_sent(extra: dict[str, Any], r: Route) -> None:
    tok = SIGNER.encode("rs_1", "ENC")
    payload = translate(body([user("Q"), assistant(thinking(tok, "t"), text("A"))], **extra), r)
    assert payload["input"] == [u("Q"), a("A")]


# ==============================================================================================
# Reasoning parameters (protocol.md §9.10)


def enabled(budget: int, **extra: Any) -> dict[str, Any]:
    return {"type": "enabled", "budget_tokens": budget, **extra}


def summarised(effort: str) -> dict[str, Any]:
    return {"effort": effort, "summary": "auto"}


ADAPTIVE = {"type": "adaptive"}
CC_THINKING = {"type": "adaptive", "display": "omitted"}

# id, thinking, output_config.effort, system-message efforts, route default_effort, expected
REASONING_CASES: list[tuple[str, Any, str | None, list[str | None], str | None, Any]] = [
    ("absent", None, None, [], None, None),
    ("effort-only", None, "high", [], None, summarised("high")),
    ("disabled", {"type": "disabled"}, None, [], "high", None),
    ("disabled+effort", {"type": "disabled"}, "low", [], None, summarised("low")),
    ("budget-1024", enabled(1024), None, [], None, summarised("low")),
    ("budget-4095", enabled(4095), None, [], None, summarised("low")),
    ("budget-4096", enabled(4096), None, [], None, summarised("medium")),
    ("budget-16383", enabled(16383), None, [], None, summarised("medium")),
    ("budget-16384", enabled(16384), None, [], None, summarised("high")),
    ("effort-beats-budget", enabled(1024), "xhigh", [], None, summarised("xhigh")),
    ("summarized", enabled(2048, display="summarized"), None, [], None, summarised("low")),
    ("enabled-omitted", enabled(2048, display="omitted"), None, [], None, {"effort": "low"}),
    ("adaptive-no-effort", ADAPTIVE, None, [], None, {"summary": "auto"}),
    ("adaptive-route-default", ADAPTIVE, None, [], "high", summarised("high")),
    ("adaptive-explicit", ADAPTIVE, "medium", [], "high", summarised("medium")),
    ("claude-code", CC_THINKING, "medium", [], None, {"effort": "medium"}),
    ("system-message-effort-wins", ADAPTIVE, "medium", ["low"], None, summarised("low")),
    ("last-system-effort-set", ADAPTIVE, "medium", ["low", None], None, summarised("low")),
    ("last-system-message-wins", ADAPTIVE, "medium", ["low", "max"], None, summarised("max")),
    ("system-effort-no-thinking", None, None, ["high"], None, summarised("high")),
    ("unknown-type", {"type": "between_tools"}, "high", [], "high", None),
]


@pytest.mark.parametrize(
    ("thinking_cfg", "effort", "system_efforts", "default_effort", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in REASONING_CASES],
)
def test_reasoning_parameters(
    thinking_cfg: dict[str, Any] | None,
    effort: str | None,
    system_efforts: list[str | None],
    default_effort: str | None,
    expected: dict[str, Any] | None,
) -> None:
    messages: list[dict[str, Any]] = [user("Q")]
    for e in system_efforts:
        cfg = {"effort": e} if e is not None else {}
        messages.append({"role": "system", "content": "env", "output_config": cfg})
    b = body(messages)
    if thinking_cfg is not None:
        b["thinking"] = thinking_cfg
    if effort is not None:
        b["output_config"] = {"effort": effort}
    payload = translate(b, route(default_effort=default_effort))
    if expected is None:
        assert "reasoning" not in payload
        assert "include" not in payload
    else:
        assert payload["reasoning"] == expected
        assert payload["include"] == ["reasoning.encrypted_content"]
    assert payload["store"] is False


def test_route_without_reasoning_sends_no_reasoning() -> None:
    b = body([user("Q")], thinking={"type": "enabled", "budget_tokens": 8000})
    b["output_config"] = {"effort": "high"}
    payload = translate(b, route(reasoning=False))
    assert "reasoning" not in payload
    assert "include" not in payload


# ==============================================================================================
# Tools and tool_choice (protocol.md §9.1)

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
WEATHER_FN = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": False,
}
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
BASH_SERVER = {"type": "bash_20250124", "name": "bash"}
# Anthropic-schema client tools go upstream as functions (issue 15 item 2)
BASH_FN = {
    "type": "function",
    "name": "bash",
    "description": "Run commands in a persistent bash shell: the working directory and "
    "environment persist between calls. Avoid commands that produce very large output or "
    "wait for input; run long-lived processes in the background.",
    "parameters": {
        "type": "object",
        "properties": {
            "command": {
                "type": "string",
                "description": "The bash command to run. Required unless the tool is being "
                "restarted.",
            },
            "restart": {
                "type": "boolean",
                "description": "Set to true to restart the bash session.",
            },
        },
    },
    "strict": False,
}


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        pytest.param([WEATHER], [WEATHER_FN], id="custom"),
        pytest.param([{**WEATHER, "type": "custom"}], [WEATHER_FN], id="type-custom"),
        pytest.param(
            [{"name": "noop", "input_schema": {"type": "object", "properties": {}}}],
            [
                {
                    "type": "function",
                    "name": "noop",
                    "parameters": {"type": "object", "properties": {}},
                    "strict": False,
                }
            ],
            id="no-description-omitted",
        ),
        pytest.param(
            [
                {
                    "name": "DeferredToolPlaceholder",
                    "description": "never call this tool.",
                    "input_schema": {"type": "object", "properties": {}},
                    "defer_loading": True,
                    "cache_control": {"type": "ephemeral"},
                }
            ],
            [
                {
                    "type": "function",
                    "name": "DeferredToolPlaceholder",
                    "description": "never call this tool.",
                    "parameters": {"type": "object", "properties": {}},
                    "strict": False,
                }
            ],
            id="defer-loading-sent-as-ordinary",
        ),
        pytest.param(
            [WEB_SEARCH, WEATHER, BASH_SERVER],
            [WEATHER_FN, BASH_FN, {"type": "web_search"}],
            id="web-search-hosted",
        ),
    ],
)
def test_tools(tools: list[dict[str, Any]], expected: list[dict[str, Any]] | None) -> None:
    payload = translate(body([user("Q")], tools=tools, tool_choice={"type": "auto"}))
    if expected is None:
        assert "tools" not in payload
        assert "tool_choice" not in payload
    else:
        assert payload["tools"] == expected
        assert payload["tool_choice"] == "auto"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        pytest.param({"type": "auto"}, {"tool_choice": "auto"}, id="auto"),
        pytest.param({"type": "any"}, {"tool_choice": "required"}, id="any"),
        pytest.param(
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "name": "get_weather"}},
            id="tool",
        ),
        pytest.param({"type": "none"}, {"tool_choice": "none"}, id="none"),
        pytest.param(
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
            id="auto-no-parallel",
        ),
        pytest.param(
            {"type": "any", "disable_parallel_tool_use": True},
            {"tool_choice": "required", "parallel_tool_calls": False},
            id="any-no-parallel",
        ),
        pytest.param(
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            {
                "tool_choice": {"type": "function", "name": "get_weather"},
                "parallel_tool_calls": False,
            },
            id="tool-no-parallel",
        ),
        pytest.param(
            {"type": "auto", "disable_parallel_tool_use": False},
            {"tool_choice": "auto"},
            id="parallel-allowed",
        ),
        pytest.param(None, {}, id="absent"),
    ],
)
def test_tool_choice(choice: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    b = body([user("Q")], tools=[WEATHER])
    if choice is not None:
        b["tool_choice"] = choice
    payload = translate(b)
    got = {k: payload[k] for k in ("tool_choice", "parallel_tool_calls") if k in payload}
    assert got == expected


@pytest.mark.parametrize(
    "choice",
    [
        {"type": "auto", "disable_parallel_tool_use": True},
        {"type": "any"},
        {"type": "tool", "name": "get_weather"},
        {"type": "none"},
    ],
)
def test_tool_choice_without_tools_omitted(choice: dict[str, Any]) -> None:
    payload = translate(body([user("Q")], tool_choice=choice))
    for key in ("tools", "tool_choice", "parallel_tool_calls"):
        assert key not in payload


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"type": "auto"}, "auto"), ({"type": "none"}, "none"), ({"type": "any"}, "required"),
     ({"type": "tool", "name": "bash"}, {"type": "function", "name": "bash"})],
)  # fmt: skip
def test_client_schema_tools_take_a_choice(choice: dict[str, Any], expected: Any) -> None:
    payload = translate(body([user("Q")], tools=[BASH_SERVER], tool_choice=choice))
    assert payload["tools"] == [BASH_FN]
    assert payload["tool_choice"] == expected


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "tool", "name": "web_search"}, "required"),
    ],
)
def test_only_hosted_tools_choice(choice: dict[str, Any], expected: str) -> None:
    payload = translate(body([user("Q")], tools=[WEB_SEARCH], tool_choice=choice))
    assert payload["tools"] == [{"type": "web_search"}]
    assert payload["tool_choice"] == expected
    assert payload["max_tool_calls"] == 3
    assert payload["include"] == ["web_search_call.action.sources"]


LONG_TOOL = "mcp__" + "very_long_server_name_" * 3 + "do_the_thing"
DOTTED_TOOL = "github.create_issue"


def test_tool_names_shortened_consistently() -> None:
    schema = {"type": "object", "properties": {}}
    b = body(
        [
            user("Q"),
            assistant(tool_use("t1", LONG_TOOL), tool_use("t2", DOTTED_TOOL)),
            user(tool_result("t1"), tool_result("t2")),
        ],
        tools=[
            {"name": LONG_TOOL, "input_schema": schema},
            {"name": DOTTED_TOOL, "input_schema": schema},
            {"name": "Read", "input_schema": schema},
        ],
        tool_choice={"type": "tool", "name": DOTTED_TOOL},
    )
    long_up = upstream_tool_name(LONG_TOOL)
    dotted_up = upstream_tool_name(DOTTED_TOOL)
    assert len(long_up) == 64
    assert dotted_up == "github_create_issue_" + sha(DOTTED_TOOL)[:8]
    payload = translate(b)
    assert [t["name"] for t in payload["tools"]] == [long_up, dotted_up, "Read"]
    assert payload["tool_choice"] == {"type": "function", "name": dotted_up}
    assert [i["name"] for i in payload["input"] if i.get("type") == "function_call"] == [
        long_up,
        dotted_up,
    ]
    assert tool_name_map(decode(b)) == {long_up: LONG_TOOL, dotted_up: DOTTED_TOOL}


def test_tool_name_map_usually_empty() -> None:
    assert tool_name_map(decode(body([user("Q")], tools=[WEATHER, WEB_SEARCH]))) == {}
    assert tool_name_map(decode(body([user("Q")]))) == {}


@pytest.mark.parametrize(
    "name",
    ["Read", "get_weather", "a", "mcp__server__tool-1", "x" * 64],
)
def test_upstream_tool_name_valid_unchanged(name: str) -> None:
    assert upstream_tool_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["x" * 65, "a.b", "with space", "ünïcode", "x" * 300, "a/b:c", "." * 70],
)
def test_upstream_tool_name_shortened(name: str) -> None:
    got = upstream_tool_name(name)
    assert got != name
    assert re.match(r"^[a-zA-Z0-9_-]{1,64}$", got)
    assert got.endswith("_" + sha(name)[:8])
    assert upstream_tool_name(name) == got  # deterministic


def test_upstream_tool_name_distinct_for_colliding_sanitisations() -> None:
    assert upstream_tool_name("a.b") != upstream_tool_name("a:b")


# ==============================================================================================
# clean_schema


CLEAN_CASES = [
    pytest.param(None, {"type": "object", "properties": {}}, id="none"),
    pytest.param({}, {"type": "object", "properties": {}}, id="empty"),
    pytest.param(
        {"properties": {"a": {"type": "string"}}},
        {"type": "object", "properties": {"a": {"type": "string"}}},
        id="missing-root-type",
    ),
    pytest.param({"type": "object"}, {"type": "object", "properties": {}}, id="no-properties"),
    pytest.param(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "urn:x",
            "$comment": "c",
            "type": "object",
            "properties": {"a": {"$comment": "inner", "type": "string"}},
        },
        {"type": "object", "properties": {"a": {"type": "string"}}},
        id="meta-keys-removed",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {
                "url": {"type": "string", "format": "uri"},
                "when": {"type": "string", "format": "date-time"},
                "mail": {"type": "string", "format": "email"},
                "id": {"type": "string", "format": "uuid"},
                "list": {"type": "array", "items": {"type": "string", "format": "uri-reference"}},
                "format": {"type": "string", "enum": ["json", "text"]},
            },
        },
        {
            "type": "object",
            "properties": {
                "url": {"type": "string"},
                "when": {"type": "string", "format": "date-time"},
                "mail": {"type": "string", "format": "email"},
                "id": {"type": "string", "format": "uuid"},
                "list": {"type": "array", "items": {"type": "string"}},
                "format": {"type": "string", "enum": ["json", "text"]},
            },
        },
        id="formats",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": r"^\p{L}+$"},
                "neg": {"type": "string", "pattern": r"^\P{Cc}*$"},
                "slug": {"type": "string", "pattern": "^[a-z-]+$"},
                "to": {"type": "string", "allOf": [{"pattern": "^[^@]"}, {"pattern": r"\p{Lu}"}]},
            },
        },
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "neg": {"type": "string"},
                "slug": {"type": "string", "pattern": "^[a-z-]+$"},
                "to": {"type": "string", "allOf": [{"pattern": "^[^@]"}, {}]},
            },
        },
        id="unicode-property-patterns",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {
                "n": {
                    "type": "integer",
                    "minimum": -9007199254740991,
                    "maximum": 9007199254740991,
                    "exclusiveMinimum": 0,
                    "default": 5,
                },
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a", "maxLength": 3},
                "items": {
                    "type": "array",
                    "maxItems": 4,
                    "items": {
                        "type": "object",
                        "properties": {"x": {"type": "number"}},
                        "additionalProperties": False,
                    },
                },
                "cfg": {"type": "object", "default": {"format": "uri", "$id": "kept"}},
            },
            "required": ["n"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "n": {
                    "type": "integer",
                    "minimum": -9007199254740991,
                    "maximum": 9007199254740991,
                    "exclusiveMinimum": 0,
                    "default": 5,
                },
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a", "maxLength": 3},
                "items": {
                    "type": "array",
                    "maxItems": 4,
                    "items": {
                        "type": "object",
                        "properties": {"x": {"type": "number"}},
                        "additionalProperties": False,
                    },
                },
                "cfg": {"type": "object", "default": {"format": "uri", "$id": "kept"}},
            },
            "required": ["n"],
            "additionalProperties": False,
        },
        id="everything-else-kept",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {
                "default": {"type": "string", "format": "uri"},
                "enum": {"type": "string", "pattern": r"^\p{L}$"},
                "$id": {"type": "string", "format": "uri"},
                "required": {"type": "boolean"},
            },
            "$defs": {"Link": {"type": "string", "format": "uri", "$comment": "x"}},
        },
        {
            "type": "object",
            "properties": {
                "default": {"type": "string"},
                "enum": {"type": "string"},
                "$id": {"type": "string"},
                "required": {"type": "boolean"},
            },
            "$defs": {"Link": {"type": "string"}},
        },
        id="properties-named-like-keywords",
    ),
]


@pytest.mark.parametrize(("schema", "expected"), CLEAN_CASES)
def test_clean_schema(schema: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    before = copy.deepcopy(schema)
    got = clean_schema(schema)
    assert got == expected
    assert schema == before  # the request is never modified
    if schema:
        assert got is not schema
    # integer bounds stay integers (not floats)
    assert orjson.dumps(got) == orjson.dumps(expected)


def test_clean_schema_memoised_by_content() -> None:
    s1 = {"type": "object", "properties": {"u": {"type": "string", "format": "uri"}}}
    s2 = copy.deepcopy(s1)
    assert clean_schema(s1) is clean_schema(s2)


def test_clean_schema_wide_integers_not_cached_but_cleaned() -> None:
    big = 2**70
    got = clean_schema({"properties": {"n": {"type": "integer", "maximum": big}}})
    assert got == {"type": "object", "properties": {"n": {"type": "integer", "maximum": big}}}


# ==============================================================================================
# Errors: InvalidRequestError whose message names the JSON path


FILE_SOURCE = {"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"}

ERROR_CASES = [
    pytest.param(
        body([user({"type": "image", "source": FILE_SOURCE})]),
        "messages.0.content.0.source: file_id sources are not supported",
        id="image-file-source",
    ),
    pytest.param(
        body([user(text("see"), {"type": "document", "source": FILE_SOURCE})]),
        "messages.0.content.1.source: file_id sources are not supported",
        id="document-file-source",
    ),
    pytest.param(
        body(
            [
                user(
                    {
                        "type": "document",
                        "source": {
                            "type": "content",
                            "content": [text("a"), {"type": "image", "source": FILE_SOURCE}],
                        },
                    }
                ),
            ]
        ),
        "messages.0.content.0.source.content.1.source: file_id sources are not supported",
        id="content-document-file-image",
    ),
    pytest.param(
        body(
            [
                user(
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "text/csv", "data": "YSxi"},
                    }
                ),
            ]
        ),
        "messages.0.content.0.source.media_type: base64 documents must be application/pdf",
        id="non-pdf-base64-document",
    ),
    pytest.param(
        body(
            [
                user("Q"),
                assistant(tool_use("t1")),
                user(tool_result("t1", [text("x"), {"type": "image", "source": FILE_SOURCE}])),
            ]
        ),
        "messages.2.content.0.content.1.source: file_id sources are not supported",
        id="file-image-in-tool-result",
    ),
    pytest.param(
        body(
            [user("Q")],
            tools=[WEATHER, WEB_SEARCH],
            tool_choice={"type": "tool", "name": "web_search"},
        ),
        "tool_choice.name: forcing the server tool 'web_search' next to other tools",
        id="choice-forces-server-tool",
    ),
    pytest.param(
        body([user("Q")], tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"}),
        "tool_choice.name: 'nope' is not a tool of this request that the client runs",
        id="choice-unknown-tool",
    ),
    pytest.param(
        body([user("Q")], tools=[{"name": "schemaless", "description": "x"}]),
        "tools.0.input_schema: Field required",
        id="custom-tool-without-schema",
    ),
    pytest.param(
        body([user("Q")], output_config={"format": {"type": "json_schema"}}),
        "output_config.format.schema: required for json_schema",
        id="json-schema-without-schema",
    ),
]


@pytest.mark.parametrize(("b", "message"), ERROR_CASES)
def test_errors(b: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_responses(decode(b), ROUTE, SIGNER, stream=False)
    assert info.value.message.startswith(message)
    assert info.value.status == 400


def test_wide_integer_in_tool_input_is_forwarded() -> None:
    items = input_of(
        [user("Q"), assistant(tool_use("t1", input={"n": 2**70})), user(tool_result("t1"))]
    )
    assert items[1] == fc("t1", '{"n":1180591620717411303424}')


# ==============================================================================================
# The Claude Code shape (claude-code.md §3, §5)

CC_ROUTE = route(max_output_tokens=32000)


def cc(**kw: Any) -> tuple[MessagesRequest, dict[str, Any]]:
    req = decode(claude_code_request(**kw))
    payload = to_responses(req, CC_ROUTE, SIGNER, stream=True)
    validate_responses_request(payload)
    return req, payload


def _all_keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _all_keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _all_keys(v)}
    return set()


def test_claude_code_first_request() -> None:
    req, payload = cc()
    assert payload["model"] == "gpt-5"
    assert payload["stream"] is True
    assert payload["store"] is False
    assert payload["max_output_tokens"] == 32000
    assert payload["instructions"].startswith(
        "You are a Claude agent, built on Anthropic's Claude Agent SDK.\n\n\nYou are an agent"
    )
    assert "x-anthropic-billing-header" not in payload["instructions"]
    # [user, system] → [user, developer]: the conversation ends with the developer message.
    assert [i["role"] for i in payload["input"]] == ["user", "developer"]
    assert payload["input"][1]["content"][0]["text"].startswith("# Environment\n")
    assert payload["input"][0]["content"][1] == in_text("add a retry decorator to the HTTP client")
    # adaptive + display omitted + effort medium (CC §3)
    assert payload["reasoning"] == {"effort": "medium"}
    assert payload["include"] == ["reasoning.encrypted_content"]
    assert payload["prompt_cache_key"] == "cc-" + sha(DEFAULT_SESSION_ID)[:32]
    assert req.metadata is not None
    assert req.metadata.user_id is not None
    assert req.metadata.user_id.startswith('{"device_id":')
    assert payload["safety_identifier"] == sha(req.metadata.user_id)[:32]
    names = [t["name"] for t in payload["tools"]]
    assert names == [
        "Agent",
        "Bash",
        "Edit",
        "ListAgents",
        "Read",
        "ReportFindings",
        "ScheduleWakeup",
        "Skill",
        "ToolSearch",
        "Workflow",
        "DeferredToolPlaceholder",
        "Write",
    ]
    for tool in payload["tools"]:
        assert tool["strict"] is False
        assert tool["type"] == "function"
        assert "$schema" not in _all_keys(tool["parameters"])
    read = next(t for t in payload["tools"] if t["name"] == "Read")
    assert read["parameters"]["properties"]["offset"]["maximum"] == 9007199254740991
    assert read["parameters"]["properties"]["limit"]["exclusiveMinimum"] == 0
    assert read["parameters"]["additionalProperties"] is False
    for key in ("context_management", "thinking", "output_config", "metadata", "system"):
        assert key not in payload


def test_claude_code_long_session() -> None:
    req, payload = cc(turns=30, tools=22, system_kb=20)
    items = payload["input"]
    # The mid-conversation system message stays in place as a developer message.
    assert items[0]["role"] == "user"
    assert items[1]["role"] == "developer"
    assert sum(1 for i in items if i.get("role") == "developer") == 1
    calls = [i["call_id"] for i in items if i.get("type") == "function_call"]
    outputs = [i["call_id"] for i in items if i.get("type") == "function_call_output"]
    assert len(calls) == 34  # 29 history turns; five of them make two parallel calls
    assert sorted(calls) == sorted(outputs)
    tool_uses = [
        b.id
        for m in req.messages
        if m.role == "assistant" and not isinstance(m.content, str)
        for b in m.content
        if isinstance(b, ToolUseBlock)
    ]
    assert calls == tool_uses
    assert not any(i.get("output") == "(no result)" for i in items)
    # The ToolSearch turn: tool_reference output, then the sibling text as a user message.
    k = next(
        n
        for n, i in enumerate(items)
        if i.get("output") == "Tool loaded: WebFetch\nTool loaded: SendMessage"
    )
    assert items[k + 1] == u("Tool loaded.")
    errors = [i["output"] for i in items if str(i.get("output", "")).startswith("[tool error] ")]
    assert len(errors) == 5
    tools = {t["name"]: t for t in payload["tools"]}
    assert len(tools) == 24
    assert tools["WebFetch"]["parameters"]["properties"]["url"] == {
        "description": "The URL to fetch",
        "type": "string",
    }
    assert tools["SendMessage"]["parameters"]["properties"]["to"]["allOf"] == [
        {"pattern": "^[^@]"},
        {"pattern": r"^\S+$"},
    ]
    assert all(t["strict"] is False for t in payload["tools"])
    # The last block's cache_control is ignored: same as without it.
    assert "cache_control" not in _all_keys(payload)


def test_claude_code_cache_key_and_instructions_stable_across_turns() -> None:
    _, turn5 = cc(turns=5)
    _, turn6 = cc(turns=6)
    _, other = cc(turns=6, session_id="0b7a1f33-2f52-4d6c-9b8e-1f3c0c3e7a10")
    assert turn5["prompt_cache_key"] == turn6["prompt_cache_key"]
    assert other["prompt_cache_key"] != turn6["prompt_cache_key"]
    # The billing header's suffix differs per request; instructions must not.
    assert turn5["instructions"] == turn6["instructions"]
    # The earlier turn's input is a prefix of the later one (upstream prefix caching).
    assert turn6["input"][: len(turn5["input"])] == turn5["input"]
    assert turn5["tools"] == turn6["tools"]


def test_claude_code_session_header_overrides() -> None:
    req = decode(claude_code_request(turns=2))
    sid = session_id_from(req, "hdr-uuid")
    payload = to_responses(req, CC_ROUTE, SIGNER, stream=True, session_id=sid)
    assert payload["prompt_cache_key"] == "cc-" + sha("hdr-uuid")[:32]
    assert session_id_from(req, None) == DEFAULT_SESSION_ID


def test_claude_code_classic_shape() -> None:
    _, payload = cc(turns=4, tools=12, classic=True)
    assert all(i.get("role") != "developer" for i in payload["input"])
    assert len(payload["input"][0]["content"]) == 7
    names = [t["name"] for t in payload["tools"]]
    assert "DeferredToolPlaceholder" not in names
    assert "ToolSearch" not in names
    # no thinking, but an explicit output_config.effort → reasoning with a summary
    assert payload["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert payload["instructions"].startswith("You are a Claude agent")


def test_claude_code_thinking_round_trip() -> None:
    _, payload = cc(turns=8, thinking_blocks=True, sign=SIGNER.encode)
    items = payload["input"]
    reasoning = [n for n, i in enumerate(items) if i.get("type") == "reasoning"]
    assert len(reasoning) == 7
    for n in reasoning:
        assert items[n]["id"].startswith("rs_")
        assert items[n]["summary"] == []
        assert items[n]["encrypted_content"].startswith("gAAAAA")
        assert items[n + 1]["role"] == "assistant"
    # Without a signature (Claude Code echoes "" when none was sent, CC §4): all dropped.
    _, unsigned = cc(turns=8, thinking_blocks=True)
    assert not any(i.get("type") == "reasoning" for i in unsigned["input"])
    assert len(unsigned["input"]) == len(items) - 7


def test_claude_code_request_not_mutated() -> None:
    req = decode(claude_code_request(turns=10, tools=22))
    before = msgspec.json.encode(req)
    to_responses(req, CC_ROUTE, SIGNER, stream=True)
    to_responses(req, CC_ROUTE, SIGNER, stream=True)
    assert msgspec.json.encode(req) == before


def test_fixture_size() -> None:
    size = len(orjson.dumps(claude_code_request(turns=30, tools=22, system_kb=20)))
    assert 135_000 <= size <= 165_000


def test_fixture_deterministic() -> None:
    assert orjson.dumps(claude_code_request(turns=7)) == orjson.dumps(claude_code_request(turns=7))


# ==============================================================================================
# Real recorded requests (shared/corpus): Anthropic bodies translate and pass the validator;
# the validator itself accepts every Responses request OpenAI answered with 200.


def _corpus(prefix: str) -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(CORPUS.glob(f"{prefix}-*.json"))


@pytest.mark.parametrize(
    "path", _corpus("anthropic") or [None], ids=lambda p: p.stem if p else "absent"
)
def test_corpus_anthropic_requests_translate(path: Path | None) -> None:
    if path is None:
        pytest.skip(f"corpus folder {CORPUS} is absent")
    record = json.loads(path.read_text())
    if record["status"] == 400:
        try:
            decode(record["request"])
        except msgspec.ValidationError:
            return  # Anthropic rejected it as malformed; so does our decoder
    payload = translate(record["request"], route(sampling=True), stream=bool(record["stream"]))
    assert payload["model"] == "gpt-5"
    # Real Claude signatures never become reasoning items.
    assert not any(i.get("type") == "reasoning" for i in payload["input"])


@pytest.mark.parametrize(
    "path", _corpus("responses") or [None], ids=lambda p: p.stem if p else "absent"
)
def test_validator_accepts_corpus_responses_requests(path: Path | None) -> None:
    if path is None:
        pytest.skip(f"corpus folder {CORPUS} is absent")
    record = json.loads(path.read_text())
    if record["status"] != 200:
        pytest.skip("a rejected request")
    validate_responses_request(record["request"])


def test_validator_rejects_broken_inputs() -> None:
    broken = [
        [fc("c1")],
        [fco("c1")],
        [rs("rs_1", "E")],
        [
            {
                "type": "function_call",
                "id": "item_1",
                "call_id": "c",
                "name": "n",
                "arguments": "{}",
            },
            fco("c"),
        ],
        [fc("c" * 65), fco("c" * 65)],
    ]
    for items in broken:
        with pytest.raises(AssertionError):
            validate_responses_request({"input": items})


# ==============================================================================================
# Purity


def test_module_is_pure() -> None:
    code = (
        "import sys, gateway.dialects.responses.request, gateway.anthropic.tool_schema;"
        "bad = [m for m in ('aiohttp', 'asyncio') if m in sys.modules];"
        "sys.exit(str(bad) if bad else 0)"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
