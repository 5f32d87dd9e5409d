"""from_chat: Chat Completions body → Anthropic Message (protocol.md §2, §8, §9.3-§9.8)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from gateway import errors
from gateway.anthropic.signatures import Signer
from gateway.dialects.chat.response import from_chat
from gateway.schemas.anthropic_out import MessageResponse

CORPUS = Path(os.environ.get("GATEWAY_CORPUS", "/work/shared/corpus"))
SIGNER = Signer(b"test-signing-key-0123456789")
MINTED = re.compile(r"^toolu_[0-9A-Za-z]{24}$")


def translate(body: Any, **kw: Any) -> MessageResponse:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    kw.setdefault("model", "claude-test")
    kw.setdefault("signer", SIGNER)
    kw.setdefault("thinking", True)
    return from_chat(raw, **kw)


def doc(msg: MessageResponse) -> dict[str, Any]:
    """The Message as JSON, minus the random message id."""
    out: dict[str, Any] = msgspec.to_builtins(msg)
    assert re.fullmatch(r"msg_[0-9A-Za-z]{24}", out.pop("id"))
    return out


def completion(
    message: dict[str, Any], finish: str | None = "stop", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
        ],
        "usage": {
            "prompt_tokens": 30,
            "completion_tokens": 7,
            "total_tokens": 37,
            "prompt_tokens_details": {"cached_tokens": 10},
        },
    }
    body.update(extra)
    return body


def call(name: str | None, arguments: str | None, call_id: str | None = "call_1") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        out["id"] = call_id
    return out


USAGE = {
    "input_tokens": 20,
    "output_tokens": 7,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 10,
}


def message(content: list[dict[str, Any]], stop_reason: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": extra.pop("stop_sequence", None),
        "usage": extra.pop("usage", USAGE),
    }


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def tool_use(name: str, input: Any, id: str = "call_1") -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": name, "input": input}


def thinking(t: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": t, "signature": ""}


# ---------------------------------------------------------------------------------------------
# Exact translations

#: stop_details of a refusal the model wrote (no policy category, issue 15)
REFUSED = {"type": "refusal", "category": None, "explanation": None}

CASES = [
    pytest.param(completion({"content": "Hi!"}), {}, message([text("Hi!")], "end_turn"), id="text"),
    pytest.param(
        completion({"content": "cut", "refusal": None}, "length"),
        {},
        message([text("cut")], "max_tokens"),
        id="length",
    ),
    pytest.param(
        completion({"content": None, "refusal": "I can't."}),
        {},
        {**message([text("I can't.")], "refusal"), "stop_details": REFUSED},
        id="refusal-is-text-and-stop-reason",
    ),
    pytest.param(
        completion({"content": "Par"}, "content_filter"),
        {},
        {**message([text("Par")], "refusal"), "stop_details": REFUSED},
        id="content-filter",
    ),
    pytest.param(
        completion(
            {"content": "Checking.", "tool_calls": [call("get_weather", '{"city":"Paris"}')]},
            "tool_calls",
        ),
        {},
        message([text("Checking."), tool_use("get_weather", {"city": "Paris"})], "tool_use"),
        id="text-then-tool",
    ),
    pytest.param(
        completion({"content": None, "tool_calls": [call("f", "{}")]}, "stop"),
        {},
        message([tool_use("f", {})], "tool_use"),
        id="stop-with-tool-call-is-tool-use",
    ),
    pytest.param(
        completion({"content": "x", "tool_calls": [call(None, "{}")]}, "tool_calls"),
        {},
        message([text("x")], "end_turn"),
        id="nameless-call-dropped",
    ),
    pytest.param(
        completion({"tool_calls": [call("f", "{}")]}, "length"),
        {},
        message([tool_use("f", {})], "max_tokens"),
        id="truncated-call-is-max-tokens",
    ),
    pytest.param(
        completion(
            {
                "tool_calls": [
                    call("f", "not json", "c1"),
                    call("f", "[1, 2]", "c2"),
                    call("f", "", "c3"),
                    call("f", None, "c4"),
                ]
            },
            "tool_calls",
        ),
        {},
        message(
            [
                tool_use("f", {}, "c1"),
                tool_use("f", {"value": [1, 2]}, "c2"),
                tool_use("f", {}, "c3"),
                tool_use("f", {}, "c4"),
            ],
            "tool_use",
        ),
        id="arguments-normalised",
    ),
    pytest.param(
        completion({"tool_calls": [call("mcp_x_1a2b3c4d", "{}", "call.bad id")]}, "tool_calls"),
        {"tool_names": {"mcp_x_1a2b3c4d": "mcp.x"}},
        message(
            [
                tool_use(
                    "mcp.x", {}, "call_bad_id_" + hashlib.sha256(b"call.bad id").hexdigest()[:8]
                )
            ],
            "tool_use",
        ),
        id="tool-name-mapped-back-id-sanitised",
    ),
    pytest.param(
        completion({"content": "Answer", "reasoning_content": "Let me think."}, "stop"),
        {},
        message([thinking("Let me think."), text("Answer")], "end_turn"),
        id="reasoning-content",
    ),
    pytest.param(
        completion({"content": "Answer", "reasoning": "vLLM thinks."}),
        {},
        message([thinking("vLLM thinks."), text("Answer")], "end_turn"),
        id="reasoning-field",
    ),
    pytest.param(
        completion({"content": "Answer", "reasoning_content": "a", "reasoning": "a"}),
        {},
        message([thinking("a"), text("Answer")], "end_turn"),
        id="both-reasoning-fields-once",
    ),
    pytest.param(
        completion({"content": "Answer", "reasoning_content": "hidden"}),
        {"thinking": False},
        message([text("Answer")], "end_turn"),
        id="thinking-off",
    ),
    pytest.param(
        completion(
            {"content": "\n\n", "reasoning": " \n", "tool_calls": [call("f", "{}")]}, "stop"
        ),
        {},
        message([tool_use("f", {})], "tool_use"),
        id="whitespace-only-text-and-thinking-dropped",
    ),
    pytest.param(
        completion({"content": "\n\nHi "}),
        {},
        message([text("\n\nHi ")], "end_turn"),
        id="surrounding-whitespace-kept",
    ),
    pytest.param(
        completion(
            {
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "thinking"},
                    {"type": "text", "text": "b"},
                ]
            }
        ),
        {},
        message([text("ab")], "end_turn"),
        id="content-part-list",
    ),
    pytest.param(
        completion(
            {"content": None, "function_call": {"name": "f", "arguments": '{"a":1}'}},
            "function_call",
        ),
        {},
        message([tool_use("f", {"a": 1}, "MINTED")], "tool_use"),
        id="legacy-function-call",
    ),
    pytest.param(
        completion({"content": None, "tool_calls": [call("f", "{}", None)]}, "tool_calls"),
        {},
        message([tool_use("f", {}, "MINTED")], "tool_use"),
        id="missing-id-minted",
    ),
    # Stop sequences (protocol.md §9.8)
    pytest.param(
        completion({"content": "The answer is 42.</a> more", "tool_calls": [call("f", "{}")]}),
        {"stop_sequences": ["</a>"]},
        message([text("The answer is 42.")], "stop_sequence", stop_sequence="</a>"),
        id="scan-cuts-and-drops-later-calls",
    ),
    pytest.param(
        completion({"content": "</a> rest"}),
        {"stop_sequences": ["</a>"]},
        message([], "stop_sequence", stop_sequence="</a>"),
        id="scan-match-at-start-no-text-block",
    ),
    pytest.param(
        {
            **completion({"content": "The answer is 42."}),
            "choices": [
                {
                    "index": 0,
                    "message": {"content": "The answer is 42."},
                    "finish_reason": "stop",
                    "stop_reason": "</a>",
                }
            ],
        },
        {"stop_sequences": ["STOP", "</a>"]},
        message([text("The answer is 42.")], "stop_sequence", stop_sequence="</a>"),
        id="vllm-reported-stop",
    ),
    pytest.param(
        {
            **completion({}),
            "choices": [
                {
                    "index": 0,
                    "message": {"content": "x"},
                    "finish_reason": "stop",
                    "stop_reason": "</a>",
                }
            ],
        },
        {"stop_sequences": ["STOP"]},
        message([text("x")], "end_turn"),
        id="vllm-reported-stop-not-requested",
    ),
    pytest.param(
        {
            **completion({}),
            "choices": [
                {
                    "index": 0,
                    "message": {"content": "x"},
                    "finish_reason": "stop",
                    "stop_reason": 128009,
                }
            ],
        },
        {"stop_sequences": ["STOP"]},
        message([text("x")], "end_turn"),
        id="vllm-stop-token-id",
    ),
    pytest.param(
        {
            **completion({}),
            "choices": [
                {"index": 1, "message": {"content": "second"}, "finish_reason": "stop"},
                {"index": 0, "message": {"content": "first"}, "finish_reason": "length"},
            ],
        },
        {},
        message([text("first")], "max_tokens"),
        id="choice-index-0-only",
    ),
    # Usage (protocol.md §9.7)
    pytest.param(
        {**completion({"content": "12345678"}), "usage": None},
        {},
        message(
            [text("12345678")],
            "end_turn",
            usage={**USAGE, "input_tokens": 0, "output_tokens": 2, "cache_read_input_tokens": 0},
        ),
        id="no-usage-estimated",
    ),
    pytest.param(
        {**completion({"content": "1234"}), "usage": {"prompt_tokens": 0, "completion_tokens": 0}},
        {},
        message(
            [text("1234")],
            "end_turn",
            usage={**USAGE, "input_tokens": 0, "output_tokens": 1, "cache_read_input_tokens": 0},
        ),
        id="zero-usage-estimated",
    ),
    pytest.param(
        {
            **completion({"content": "x"}),
            "usage": {
                "prompt_tokens": 100,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
            },
        },
        {},
        message(
            [text("x")],
            "end_turn",
            usage={
                "input_tokens": 10,
                "output_tokens": 5,
                "cache_creation_input_tokens": 30,
                "cache_read_input_tokens": 60,
            },
        ),
        id="cache-reads-and-writes-split-out",
    ),
    pytest.param(
        completion({"content": None}, None),
        {},
        message([], "end_turn"),
        id="empty-answer",
    ),
]


@pytest.mark.parametrize(("body", "opts", "expected"), CASES)
def test_translation(body: dict[str, Any], opts: dict[str, Any], expected: dict[str, Any]) -> None:
    got = doc(translate(body, **opts))
    for block in got["content"]:
        if block["type"] == "tool_use" and MINTED.match(block["id"]):
            block["id"] = "MINTED"
    assert got == expected


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        (b'{"choices": [', errors.BadGatewayError, "upstream returned an invalid response: "),
        (
            b"[]",
            errors.BadGatewayError,
            "upstream returned an invalid response: Expected `object`",
        ),
        (b'{"choices": []}', errors.BadGatewayError, "upstream answered 200 without a response"),
        (
            b'{"object": "chat.completion"}',
            errors.BadGatewayError,
            "upstream answered 200 without a response",
        ),
        (
            b'{"choices": [{"message": {"content": 5}}]}',
            errors.BadGatewayError,
            "upstream returned an invalid response: Expected `str | array | null`",
        ),
        (
            b'{"error": {"message": "slow down", "code": "rate_limit_exceeded"}}',
            errors.RateLimitError,
            "slow down",
        ),
        (
            b'{"error": {"message": "too long", "code": "context_length_exceeded"}}',
            errors.InvalidRequestError,
            "prompt is too long: too long",
        ),
        (b'{"error": "backend crashed"}', errors.APIError, "backend crashed"),
    ],
)
def test_errors(body: bytes, kind: type[errors.GatewayError], message: str) -> None:
    with pytest.raises(kind) as info:
        translate(body)
    assert type(info.value) is kind
    assert info.value.message.startswith(message)
    assert info.value.message.startswith(message) or message in info.value.message


# ---------------------------------------------------------------------------------------------
# Real recorded bodies (shared/corpus/chat-json-*.json, 200 only)


def corpus_bodies() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(
        p for p in CORPUS.glob("chat-json-*.json") if json.loads(p.read_text())["status"] == 200
    )


def corpus_usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    """The usage of a recorded body; the recordings also report reasoning tokens (0) and,
    most, ``service_tier: default`` (Anthropic's ``standard``), added in the test."""
    return {
        "input_tokens": prompt - cached,
        "output_tokens": completion,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens_details": {"thinking_tokens": 0},
    }


CORPUS_EXPECTED: dict[str, tuple[list[str], str, dict[str, Any]]] = {
    # file stem → (block types, stop_reason, usage)
    "chat-json-finish-length": (["text"], "max_tokens", corpus_usage(1220, 100, 1152)),
    "chat-json-multiple-choices-n2": (["text"], "end_turn", corpus_usage(13, 44)),
    "chat-json-parallel-tool-calls-reserialized": (
        ["tool_use", "tool_use"],
        "tool_use",
        corpus_usage(75, 51),
    ),
    "chat-json-parallel-tool-calls": (["tool_use", "tool_use"], "tool_use", corpus_usage(67, 47)),
    "chat-json-refusal": (["text"], "refusal", corpus_usage(65, 13)),
    "chat-json-text": (["text"], "end_turn", corpus_usage(23, 8)),
    "chat-json-tool-result-followup": (["text"], "end_turn", corpus_usage(79, 13)),
}


@pytest.mark.skipif(not corpus_bodies(), reason="corpus not present (shared/corpus/chat-json-*)")
@pytest.mark.parametrize("path", corpus_bodies(), ids=lambda p: p.stem)
def test_corpus_bodies(path: Path) -> None:
    recorded = json.loads(path.read_text())
    msg = doc(translate(str(recorded["response_body"]).encode()))
    kinds, reason, usage = CORPUS_EXPECTED[path.stem]
    if json.loads(recorded["response_body"]).get("service_tier") == "default":
        usage = {**usage, "service_tier": "standard"}
    assert [b["type"] for b in msg["content"]] == kinds
    assert msg["stop_reason"] == reason and msg["usage"] == usage
    choice = json.loads(recorded["response_body"])["choices"][0]["message"]
    for block, tc in zip(
        [b for b in msg["content"] if b["type"] == "tool_use"],
        choice.get("tool_calls") or (),
        strict=True,
    ):
        assert block["id"] == tc["id"]
        assert block["input"] == json.loads(tc["function"]["arguments"])
    if kinds == ["text"]:
        assert msg["content"][0]["text"] == (choice["content"] or choice["refusal"])


def test_corpus_all_covered() -> None:
    if not corpus_bodies():
        pytest.skip("corpus not present")
    assert {p.stem for p in corpus_bodies()} == set(CORPUS_EXPECTED)
