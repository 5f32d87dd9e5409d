"""The Anthropic Messages stream grammar as an executable check (protocol.md §3.2, §3.4).

Reused by every suite that produces Anthropic SSE::

    from tests.anthropic_grammar import check_stream, parse_frames
    check_stream(parse_frames(body))

``check_stream`` raises ``AssertionError`` naming the event position and the rule broken.
The real Anthropic streams in ``shared/corpus/anthropic-stream-*.json`` satisfy it
(``tests/test_stream_responses.py`` checks that).
"""

from __future__ import annotations

import json
from typing import Any

from gateway.sse import SSEDecoder

__all__ = ["check_stream", "parse_frames"]

# Which delta types each block type accepts (§3.3; the SDK accumulator silently drops the
# others, §3.4 item 8). Block types not listed (redacted_thinking, server-tool results) take
# no deltas at all.
_DELTAS: dict[str, frozenset[str]] = {
    "text": frozenset({"text_delta", "citations_delta"}),
    "tool_use": frozenset({"input_json_delta"}),
    "server_tool_use": frozenset({"input_json_delta"}),
    "thinking": frozenset({"thinking_delta", "signature_delta"}),
    "compaction": frozenset({"compaction_delta"}),
}
_TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use"})


def parse_frames(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Decode an SSE body with ``gateway.sse`` into ``(event name, parsed data)`` pairs."""
    decoder = SSEDecoder()
    events = decoder.feed(body) + decoder.finish()
    return [(ev.event, json.loads(ev.data)) for ev in events]


def check_stream(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Assert that ``events`` is a complete, well-formed Anthropic Messages stream.

    Rules: ``message_start`` first (with ``message.usage``), or the whole stream is one
    ``error``; each event name equals its ``data["type"]``; block indices 0, 1, 2 … in start
    order; one block open at a time; deltas only inside their open block and of a type that
    block accepts; a ``tool_use`` block's ``partial_json`` pieces join to a JSON object
    (a truncated last block is allowed when the message stops with ``max_tokens``);
    ``content_block_stop`` for every start; ``message_delta`` (with ``stop_reason``) only
    after every block stopped; ``message_stop`` last, after a ``message_delta`` — or ``error``
    last, and then no ``message_stop``; ``ping`` anywhere after ``message_start``.
    """
    assert events, "empty stream"

    def fail(pos: int, why: str) -> AssertionError:
        name = events[pos][0] if pos < len(events) else "<end>"
        return AssertionError(f"event {pos} ({name}): {why}")

    for pos, (name, data) in enumerate(events):
        if not isinstance(data, dict) or data.get("type") != name:
            got = data.get("type") if isinstance(data, dict) else data
            raise fail(pos, f"event name {name!r} differs from data type {got!r}")

    first, data0 = events[0]
    if first == "error":
        if len(events) != 1:
            raise fail(1, "events after the terminal error")
        _check_error(data0, fail, 0)
        return
    if first != "message_start":
        raise fail(0, "stream must begin with message_start")
    message = data0.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("usage"), dict):
        raise fail(0, "message_start.message.usage missing (the SDK needs it, §3.4 item 2)")
    if message.get("content") != []:
        raise fail(0, "message_start.message.content must be []")

    next_index = 0
    open_index: int | None = None
    open_type = ""
    json_parts: list[str] = []
    signed = False
    saw_message_delta = False
    # A tool input that does not parse, kept until we know whether max_tokens excuses it.
    bad_json: AssertionError | None = None
    last = len(events) - 1

    for pos in range(1, len(events)):
        name, data = events[pos]
        if name == "ping":
            continue
        if name == "error":
            if pos != last:
                raise fail(pos + 1, "events after the terminal error")
            if bad_json is not None:
                raise bad_json
            _check_error(data, fail, pos)
            return
        if name == "message_start":
            raise fail(pos, "second message_start")
        if name == "message_stop":
            if pos != last:
                raise fail(pos + 1, "events after message_stop")
            if not saw_message_delta:
                raise fail(pos, "message_stop without a message_delta before it")
            return
        if saw_message_delta and name != "message_delta":
            raise fail(pos, "content event after message_delta")
        if name == "content_block_start":
            index = data.get("index")
            if bad_json is not None:
                raise bad_json  # only the very last block may be cut off
            if open_index is not None:
                raise fail(pos, f"block {index} starts while block {open_index} is open")
            if index != next_index:
                raise fail(pos, f"block index {index}, expected {next_index} (contiguous)")
            block = data.get("content_block")
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise fail(pos, "content_block without a type")
            open_type = block["type"]
            if open_type in _TOOL_BLOCKS and block.get("input") != {}:
                raise fail(pos, "tool_use start must carry input {} (§3.4 item 5)")
            open_index = index
            next_index += 1
            json_parts = []
            signed = False
        elif name == "content_block_delta":
            index = data.get("index")
            if open_index is None or index != open_index:
                raise fail(pos, f"delta for block {index}, which is not open")
            delta = data.get("delta")
            dtype = delta.get("type") if isinstance(delta, dict) else None
            if dtype not in _DELTAS.get(open_type, frozenset()):
                raise fail(pos, f"{dtype} delta in a {open_type} block")
            assert isinstance(delta, dict)
            if dtype == "input_json_delta":
                if not isinstance(delta.get("partial_json"), str):
                    raise fail(pos, "input_json_delta without a partial_json string")
                json_parts.append(delta["partial_json"])
            elif dtype == "thinking_delta":
                if signed:
                    raise fail(pos, "thinking_delta after the signature_delta")
            elif dtype == "signature_delta":
                signed = True
        elif name == "content_block_stop":
            index = data.get("index")
            if open_index is None or index != open_index:
                raise fail(pos, f"stop for block {index}, which is not open")
            if open_type in _TOOL_BLOCKS and json_parts:
                joined = "".join(json_parts)
                try:
                    value = json.loads(joined)
                except ValueError:
                    bad_json = fail(pos, f"tool input JSON does not parse: {joined!r}")
                else:
                    if not isinstance(value, dict):
                        raise fail(pos, f"tool input is not a JSON object: {joined!r}")
            open_index = None
        elif name == "message_delta":
            if open_index is not None:
                raise fail(pos, f"message_delta while block {open_index} is open")
            delta = data.get("delta")
            if not isinstance(delta, dict) or not isinstance(delta.get("stop_reason"), str):
                raise fail(pos, "message_delta without a stop_reason")
            if bad_json is not None and delta["stop_reason"] != "max_tokens":
                raise bad_json
            usage = data.get("usage")
            if not isinstance(usage, dict) or not isinstance(usage.get("output_tokens"), int):
                raise fail(pos, "message_delta.usage.output_tokens missing")
            saw_message_delta = True
        else:
            raise fail(pos, f"unknown event {name!r}")

    raise fail(len(events), "stream ends without message_stop or error")


def _check_error(data: dict[str, Any], fail: Any, pos: int) -> None:
    err = data.get("error")
    if not isinstance(err, dict) or not isinstance(err.get("type"), str):
        raise fail(pos, "error event without error.type")
    if not isinstance(err.get("message"), str):
        raise fail(pos, "error event without error.message")
