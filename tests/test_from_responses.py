"""from_responses: Responses response object → Anthropic Message (protocol.md §2, §6, §9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from gateway import errors
from gateway.anthropic.signatures import Signer
from gateway.anthropic.tools import tool_input, tool_input_json
from gateway.dialects.responses.response import from_responses
from gateway.schemas.anthropic_out import (
    RESPONSE_ENCODER,
    MessageResponse,
    OutRedactedThinking,
    OutText,
    OutThinking,
    OutToolUse,
    Usage,
)

CORPUS = Path("/work/shared/corpus")
SIGNER = Signer(b"test-signing-key-0123456789")


def corpus_bodies() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(
        p
        for p in CORPUS.glob("responses-json-*.json")
        if json.loads(p.read_text())["status"] == 200
    )


def translate(body: Any, **kw: Any) -> MessageResponse:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    kw.setdefault("model", "claude-test")
    kw.setdefault("signer", SIGNER)
    kw.setdefault("thinking", True)
    return from_responses(raw, **kw)


def kinds(msg: MessageResponse) -> list[str]:
    return [str(b.__struct_config__.tag) for b in msg.content]


#: usage.output_tokens_details of an upstream that counted no reasoning tokens (issue 15)
NO_THINKING = {"thinking_tokens": 0}


def response(*output: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "output": list(output),
        "usage": {
            "input_tokens": 30,
            "input_tokens_details": {"cached_tokens": 10},
            "output_tokens": 7,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 37,
        },
    }
    body.update(extra)
    return body


def message(*parts: dict[str, Any], item_id: str = "msg_1") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "content": list(parts)}


def text(t: str) -> dict[str, Any]:
    return {"type": "output_text", "text": t, "annotations": []}


def call(name: str, arguments: str, call_id: str = "call_1") -> dict[str, Any]:
    return {
        "id": "fc_" + call_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


# ---------------------------------------------------------------------------------------------
# Corpus


@pytest.mark.skipif(not corpus_bodies(), reason="corpus not present")
@pytest.mark.parametrize("path", corpus_bodies(), ids=lambda p: p.stem)
@pytest.mark.parametrize("thinking", [True, False])
def test_corpus_bodies_translate(path: Path, thinking: bool) -> None:
    body = json.loads(path.read_text())["response_body"].encode()
    msg = translate(body, thinking=thinking)
    # Round-trips through the outbound encoder and the Anthropic SDK's model.
    encoded = RESPONSE_ENCODER.encode(msg)
    doc = json.loads(encoded)
    assert doc["id"].startswith("msg_") and doc["model"] == "claude-test"
    assert msg.stop_reason in ("end_turn", "tool_use", "max_tokens")
    from anthropic.types import Message

    Message.model_validate(doc)
    if not thinking:
        assert not {"thinking", "redacted_thinking"} & set(kinds(msg))


def corpus(name: str) -> bytes:
    path = CORPUS / f"{name}.json"
    if not path.exists():
        pytest.skip("corpus not present")
    return str(json.loads(path.read_text())["response_body"]).encode()


def test_corpus_text() -> None:
    msg = translate(corpus("responses-json-text"))
    assert msg.content == [
        OutText(
            text="The 2020 World Series was played at Globe Life Field in Arlington, Texas. "
            "This was the first time the World Series was held at a neutral site due to the "
            "COVID-19 pandemic."
        )
    ]
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage == Usage(
        input_tokens=53,
        output_tokens=40,
        output_tokens_details=NO_THINKING,
        service_tier="standard",
    )


def test_corpus_text_non_ascii_escape() -> None:
    msg = translate(corpus("responses-json-function-call-output-followup"))
    assert len(msg.content) == 1 and isinstance(msg.content[0], OutText)
    assert "72°F" in msg.content[0].text


def test_corpus_function_call() -> None:
    msg = translate(corpus("responses-json-function-call"))
    assert msg.content == [
        OutToolUse(
            id="call_tjEzTywkXuBUO42ugPFnQYqi",
            name="get_current_weather",
            input={"location": "Boston, MA", "unit": "celsius"},
        )
    ]
    assert msg.stop_reason == "tool_use"
    assert msg.usage == Usage(
        input_tokens=75,
        output_tokens=23,
        output_tokens_details=NO_THINKING,
        service_tier="standard",
    )


def test_corpus_parallel_function_calls() -> None:
    msg = translate(corpus("responses-json-parallel-function-calls"))
    assert msg.content == [
        OutToolUse(
            id="call_grggfsR0ccRoMcXy17gsju6I", name="get_weather", input={"location": "London"}
        ),
        OutToolUse(
            id="call_jQ4vl5MZL0h55SoqPmlfYYyd", name="get_weather", input={"location": "London"}
        ),
    ]
    assert msg.stop_reason == "tool_use"


def test_corpus_reasoning_function_call() -> None:
    body = corpus("responses-json-reasoning-function-call")
    item = orjson.loads(body)["output"][0]
    msg = translate(body)
    assert kinds(msg) == ["redacted_thinking", "tool_use"]
    first = msg.content[0]
    assert isinstance(first, OutRedactedThinking)
    assert SIGNER.decode(first.data) == (item["id"], item["encrypted_content"])
    assert kinds(translate(body, thinking=False)) == ["tool_use"]


def test_corpus_reasoning_summary() -> None:
    body = corpus("responses-json-reasoning-summary-encrypted")
    item = orjson.loads(body)["output"][0]
    msg = translate(body)
    assert kinds(msg) == ["thinking", "text"]
    block = msg.content[0]
    assert isinstance(block, OutThinking)
    assert block.thinking == item["summary"][0]["text"]
    assert SIGNER.decode(block.signature) == (item["id"], item["encrypted_content"])
    assert msg.content[1] == OutText(text="4")


def test_corpus_reasoning_without_summary_or_encryption() -> None:
    # responses-json-reasoning-tokens: reasoning item {summary: []} only → no block (§9.3).
    msg = translate(corpus("responses-json-reasoning-tokens"))
    assert kinds(msg) == ["text"]


def test_corpus_incomplete_cache_write() -> None:
    msg = translate(corpus("responses-json-incomplete-max-output-tokens"))
    assert msg.stop_reason == "max_tokens"
    # input 1220 includes 1217 cache writes (§9.7).
    assert msg.usage == Usage(
        input_tokens=3,
        output_tokens=100,
        cache_creation_input_tokens=1217,
        cache_read_input_tokens=0,
        output_tokens_details={"thinking_tokens": 54},  # the recording's reasoning_tokens
        service_tier="standard",  # the recording's "default"
    )
    assert kinds(msg) == ["text"]


# ---------------------------------------------------------------------------------------------
# Mapping rules


def test_text_parts_of_one_message_make_one_block() -> None:
    msg = translate(response(message(text("Hel"), text(""), text("lo")), message(text("!"))))
    assert msg.content == [OutText(text="Hello"), OutText(text="!")]
    assert msg.usage == Usage(
        input_tokens=20,
        output_tokens=7,
        cache_read_input_tokens=10,
        output_tokens_details=NO_THINKING,
    )


def test_empty_text_makes_no_block() -> None:
    assert translate(response(message(text("")))).content == []


def test_tool_names_mapped_back() -> None:
    msg = translate(response(call("mcp__x", "{}")), tool_names={"mcp__x": "mcp:x"})
    assert msg.content == [OutToolUse(id="call_1", name="mcp:x", input={})]
    msg = translate(response(call("other", "{}")), tool_names={"mcp__x": "mcp:x"})
    assert msg.content == [OutToolUse(id="call_1", name="other", input={})]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ("", {}),
        ("   ", {}),
        ("{not json", {}),
        ("[1, 2]", {"value": [1, 2]}),
        ('"s"', {"value": "s"}),
        ("null", {"value": None}),
    ],
)
def test_tool_input(arguments: str, expected: Any) -> None:
    assert tool_input(arguments) == expected
    msg = translate(response(call("f", arguments)))
    assert msg.content == [OutToolUse(id="call_1", name="f", input=expected)]
    assert orjson.loads(tool_input_json(arguments)) == expected


def test_tool_input_json_keeps_valid_upstream_text() -> None:
    assert tool_input_json('{"a": 1 }') == '{"a": 1 }'
    assert tool_input_json("") == "{}"
    assert tool_input_json("[1]") == '{"value":[1]}'


def test_call_id_sanitised() -> None:
    msg = translate(response(call("f", "{}", call_id="call/with:odd")))
    block = msg.content[0]
    assert isinstance(block, OutToolUse)
    assert block.id.startswith("call_with_odd_")


def test_refusal_part() -> None:
    msg = translate(response(message({"type": "refusal", "refusal": "I can't help with that."})))
    assert msg.content == [OutText(text="I can't help with that.")]
    assert msg.stop_reason == "refusal"


def test_incomplete_content_filter_is_refusal() -> None:
    body = response(
        message(text("partial")),
        status="incomplete",
        incomplete_details={"reason": "content_filter"},
    )
    assert translate(body).stop_reason == "refusal"


def test_incomplete_tool_call_is_max_tokens() -> None:
    body = response(
        call("f", '{"a":'),
        status="incomplete",
        incomplete_details={"reason": "max_output_tokens"},
    )
    msg = translate(body)
    assert msg.stop_reason == "max_tokens"
    assert msg.content == [OutToolUse(id="call_1", name="f", input={})]


def test_reasoning_raw_text_and_parts() -> None:
    vllm = {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "raw thoughts"}],
    }
    msg = translate(response(vllm, message(text("ok"))))
    block = msg.content[0]
    assert isinstance(block, OutThinking) and block.thinking == "raw thoughts"
    assert SIGNER.decode(block.signature) == ("rs_1", None)

    parts = {
        "id": "rs_2",
        "type": "reasoning",
        "summary": [
            {"type": "summary_text", "text": "one"},
            {"type": "summary_text", "text": ""},
            {"type": "summary_text", "text": "two"},
        ],
        "content": [{"type": "reasoning_text", "text": "ignored when a summary exists"}],
        "encrypted_content": "enc",
    }
    block = translate(response(parts)).content[0]
    assert isinstance(block, OutThinking) and block.thinking == "one\n\ntwo"
    assert SIGNER.decode(block.signature) == ("rs_2", "enc")
    assert translate(response(parts), thinking=False).content == []


def test_unknown_items_ignored() -> None:
    body = response(
        {"id": "fs_1", "type": "file_search_call", "status": "completed", "queries": []},
        {"id": "mcpl_1", "type": "mcp_list_tools", "server_label": "x", "tools": []},
        message(text("answer")),
        {"type": "future_item", "whatever": [1, 2]},
    )
    assert translate(body).content == [OutText(text="answer")]


def test_stop_sequence_cuts_and_drops_the_rest() -> None:
    body = response(
        message(text("first")),
        call("f", "{}"),
        message(text("keep this STO"), text("P and not this")),
        message(text("dropped")),
        call("g", "{}"),
    )
    msg = translate(body, stop_sequences=["STOP"])
    assert msg.content == [
        OutText(text="first"),
        OutToolUse(id="call_1", name="f", input={}),
        OutText(text="keep this "),
    ]
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "STOP"


def test_stop_sequence_at_start_of_block_drops_it() -> None:
    msg = translate(response(message(text("STOP now"))), stop_sequences=["STOP"])
    assert msg.content == []
    assert msg.stop_reason == "stop_sequence"


def test_stop_sequence_not_found() -> None:
    msg = translate(response(message(text("plain"))), stop_sequences=["STOP"])
    assert msg.content == [OutText(text="plain")] and msg.stop_reason == "end_turn"


def test_missing_usage_is_estimated() -> None:
    body = response(message(text("x" * 40)), usage=None)
    assert translate(body).usage == Usage(input_tokens=0, output_tokens=10)


# ---------------------------------------------------------------------------------------------
# Failures


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("rate_limit_exceeded", errors.RateLimitError),
        ("server_error", errors.APIError),
        ("invalid_prompt", errors.InvalidRequestError),
        (None, errors.APIError),
    ],
)
def test_failed_status(code: str | None, cls: type[errors.GatewayError]) -> None:
    body = response(status="failed", error={"code": code, "message": "boom"})
    with pytest.raises(cls) as info:
        translate(body)
    assert type(info.value) is cls
    assert info.value.message == "boom"


def test_error_envelope_with_200() -> None:
    body = {"error": {"message": "Overloaded", "type": "server_error", "code": None}}
    with pytest.raises(errors.APIError, match="Overloaded"):
        translate(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'{"status": 3}',
        b'{"output": [{"type": "message", "content": 5}]}',
    ],
)
def test_invalid_body(body: bytes) -> None:
    with pytest.raises(errors.BadGatewayError) as info:
        translate(body)
    assert info.value.status == 502
    assert info.value.message.startswith("upstream returned an invalid response: ")
    assert len(info.value.message) < 300


@pytest.mark.parametrize("status", ["cancelled", "queued", "in_progress"])
def test_unfinished_status(status: str) -> None:
    with pytest.raises(errors.APIError, match=status):
        translate(response(status=status))


def test_decoder_skips_unknown_fields() -> None:
    body = response(message(text("hi")), tools=[{"type": "function"}], reasoning={"x": 1})
    body["brand_new_field"] = {"nested": [1, 2, 3]}
    assert translate(body).content == [OutText(text="hi")]
    assert isinstance(msgspec.json.decode(orjson.dumps(body)), dict)
