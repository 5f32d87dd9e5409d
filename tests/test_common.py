"""translate.common: ids, thinking signatures, stop_reason precedence, usage mapping."""

from __future__ import annotations

import re

import pytest

from gateway.anthropic.ids import (
    call_id_to_upstream,
    message_id,
    request_id,
    tool_use_id_from_upstream,
)
from gateway.anthropic.signatures import Signer
from gateway.anthropic.stop import stop_reason
from gateway.anthropic.usage import usage_from_chat, usage_from_responses
from gateway.schemas.anthropic_out import Usage

KEY = b"k" * 32


def test_ids_shape() -> None:
    assert re.fullmatch(r"msg_[0-9A-Za-z]{24}", message_id())
    assert re.fullmatch(r"req_[0-9A-Za-z]{24}", request_id())
    assert message_id() != message_id()


@pytest.mark.parametrize(
    ("call_id", "expected"),
    [
        ("call_AbC123", "call_AbC123"),
        ("toolu_01A-b_c", "toolu_01A-b_c"),
        ("call.with:odd/chars", "call_with_odd_chars_"),
    ],
)
def test_tool_use_id_from_upstream(call_id: str, expected: str) -> None:
    out = tool_use_id_from_upstream(call_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", out)
    assert out.startswith(expected)
    assert out == tool_use_id_from_upstream(call_id)  # deterministic


def test_missing_call_id_gets_toolu() -> None:
    assert re.fullmatch(r"toolu_[0-9A-Za-z]{24}", tool_use_id_from_upstream(None))


def test_call_id_to_upstream_limits_length_stably() -> None:
    assert call_id_to_upstream("toolu_01ABC") == "toolu_01ABC"
    long = "toolu_" + "x" * 100
    out = call_id_to_upstream(long)
    assert len(out) == 64
    assert out == call_id_to_upstream(long)
    assert out != call_id_to_upstream(long + "y")


def test_signer_round_trip_and_forgery() -> None:
    signer = Signer(KEY)
    token = signer.encode("rs_123", "gAAAAB-enc")
    assert token.startswith("gw1.")
    assert signer.decode(token) == ("rs_123", "gAAAAB-enc")
    assert signer.decode(signer.encode("rs_1", None)) == ("rs_1", None)
    assert Signer(b"other-key-0123456789").decode(token) is None
    body, mac = token[4:].split(".")
    assert signer.decode(f"gw1.{body}x.{mac}") is None
    assert signer.decode(f"gw1.{body}.{mac[:-1]}A") is None
    for foreign in ("", "EqQBCkgIARABGAIiQL", "gw1.", "gw1.abc"):
        assert signer.decode(foreign) is None
    with pytest.raises(ValueError):
        Signer(b"short")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "end_turn"),
        ({"tool_use": True}, "tool_use"),
        ({"refusal": True, "tool_use": True}, "refusal"),
        ({"incomplete_reason": "max_output_tokens", "tool_use": True}, "max_tokens"),
        ({"incomplete_reason": "length", "refusal": True}, "max_tokens"),
        ({"incomplete_reason": "content_filter"}, "refusal"),
        ({"stop_sequence": "END", "tool_use": True}, "stop_sequence"),
    ],
)
def test_stop_reason_precedence(kwargs: dict[str, object], expected: str) -> None:
    assert stop_reason(**kwargs) == expected  # type: ignore[arg-type]


def test_usage_from_responses_splits_cache() -> None:
    u = {
        "input_tokens": 1500,
        "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 100},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 22},
        "total_tokens": 1540,
    }
    assert usage_from_responses(u) == Usage(
        input_tokens=376,
        output_tokens=40,
        cache_creation_input_tokens=100,
        cache_read_input_tokens=1024,
        output_tokens_details={"thinking_tokens": 22},  # issue 15: reasoning tokens reported
    )
    assert usage_from_responses(None) == Usage(input_tokens=0, output_tokens=0)


def test_usage_from_chat() -> None:
    u = {
        "prompt_tokens": 2000,
        "completion_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 1280},
    }
    assert usage_from_chat(u) == Usage(
        input_tokens=720,
        output_tokens=7,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=1280,
    )
