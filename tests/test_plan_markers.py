"""The request plan's one-pass look for rarely used features (issue 19): it finds each of them,
and a body full of their tokens costs it no memory in proportion."""

from __future__ import annotations

import tracemalloc

import orjson

from gateway.anthropic.plan import prepare
from gateway.anthropic.signatures import Signer
from gateway.config import load_settings
from gateway.intake import decode_request
from gateway.routing import Router

ENV = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-test"}
ROUTE = Router(load_settings(None, ENV), ENV).resolve("claude-sonnet-4-5")
SIGNER = Signer(b"k" * 32)


def _plan(body: dict[str, object]) -> object:
    raw = orjson.dumps(body)
    return prepare(raw, decode_request(raw), ROUTE, SIGNER)[1]


def _body(**extra: object) -> dict[str, object]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}], **extra}  # fmt: skip


def test_the_one_hour_cache_is_found_and_a_mere_mention_is_not() -> None:
    hour = [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    assert _plan(_body(system=hour)).long_cache is True  # type: ignore[attr-defined]
    assert _plan(_body()).long_cache is False  # type: ignore[attr-defined]
    # the token without a ttl before it: not a one-hour cache
    tool = {"name": "t", "input_schema": {"type": "object", "enum": ["1h"]}}
    assert _plan(_body(tools=[tool])).long_cache is False  # type: ignore[attr-defined]


def test_a_body_full_of_marker_tokens_costs_no_memory_per_token() -> None:
    tool = {"name": "t", "input_schema": {"type": "object", "enum": ["1h"] * 200_000}}
    raw = orjson.dumps(_body(tools=[tool]))
    req = decode_request(raw)
    tracemalloc.start()
    try:
        prepare(raw, req, ROUTE, SIGNER)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a list of every match would hold 200,000 objects (several MB); the plan needs a few KB
    assert peak < 256 * 1024, peak
