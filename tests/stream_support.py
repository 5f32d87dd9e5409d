"""Helpers shared by the stream translator suites (Responses and Chat dialects)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

from anthropic.lib.streaming._messages import accumulate_event

from gateway.relay import StreamTranslator
from gateway.sse import SSEDecoder
from tests.anthropic_grammar import parse_frames

Events = list[tuple[str, dict[str, Any]]]

#: the fields of each accumulated block type that a comparison looks at
BLOCK_KEYS: dict[str, tuple[str, ...]] = {
    "text": ("type", "text", "citations"),
    "tool_use": ("type", "id", "name", "input"),
    "thinking": ("type", "thinking", "signature"),
    "redacted_thinking": ("type", "data"),
    "server_tool_use": ("type", "id", "name", "input"),
    "web_search_tool_result": ("type", "tool_use_id", "content"),
    "code_execution_tool_result": ("type", "tool_use_id", "content"),
    "mcp_tool_use": ("type", "id", "name", "server_name", "input"),
    "mcp_tool_result": ("type", "tool_use_id", "is_error", "content"),
    "compaction": ("type", "content", "encrypted_content"),
}


def run_translator(
    tr: StreamTranslator,
    body: bytes,
    chunks: Iterable[bytes] | None = None,
    *,
    one_by_one: bool = False,
) -> list[bytes]:
    """Feed ``body`` (optionally pre-split) through SSEDecoder + ``tr``, then EOF: the events
    of each chunk with one ``feed_many`` call, as the relay does, or each with ``feed``."""
    decoder = SSEDecoder()
    frames: list[bytes] = []
    for chunk in [*(chunks if chunks is not None else [body]), None]:
        events = decoder.feed(chunk) if chunk is not None else decoder.finish()
        if not one_by_one:
            frames += tr.feed_many(events)
            continue
        for ev in events:
            frames += tr.feed(ev)
    frames += tr.finish()
    return frames


def assert_one_by_one_alike(
    translate: Callable[..., tuple[list[bytes], Any]], body: bytes, **opts: Any
) -> None:
    """``feed_many`` per read (the relay's call, the hot path inline) gives what ``feed``
    gives event by event: the same frames and the same counters."""
    whole, many = translate(body, **opts)
    singly, one = translate(body, one_by_one=True, **opts)
    assert singly == whole
    counters = ("upstream_events", "frames_out", "ignored_events")
    assert [getattr(one, c) for c in counters] == [getattr(many, c) for c in counters]


def events_of(frames: list[bytes]) -> Events:
    return parse_frames(b"".join(frames))


def split_at(body: bytes, points: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(points), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds)]


def accumulate(events: Events) -> Any:
    """The official SDK accumulator over our output (protocol.md §3.4)."""
    snapshot = None
    bufs: dict[int, bytes] = {}
    for name, data in events:
        if name in ("ping", "error"):
            continue
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)
    return snapshot


def usage_tuple(u: Any) -> tuple[int, int, int, int]:
    return (
        u.input_tokens,
        u.output_tokens,
        u.cache_creation_input_tokens,
        u.cache_read_input_tokens,
    )
