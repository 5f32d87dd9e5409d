"""The Anthropic Messages SSE frames every stream translator writes (protocol.md §3.1, §3.3).

Pure: imports neither aiohttp nor asyncio. Shared by :mod:`.stream` and every dialect's stream
translator; the hot-path deltas are precomputed byte prefixes.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import orjson

from ..schemas.anthropic_out import MessageResponse, OutText, StopReason, Usage
from ..sse_out import encode_event

__all__ = [
    "DELTA_END",
    "DELTA_HEAD",
    "DELTA_KIND",
    "MESSAGE_STOP_FRAME",
    "PING_FRAME",
    "SIGNATURE_KIND",
    "STOP_HEAD",
    "block_start_frame",
    "block_stop_frame",
    "message_delta_frame",
    "message_frames",
    "message_start_frame",
    "signature_delta_frame",
    "usage_doc",
]

# Deltas are built as prefix + orjson.dumps(fragment) + DELTA_END: the bytes equal orjson.dumps
# of the whole payload, without building a dict per event (hot path).

PING_FRAME: Final = b'event: ping\ndata: {"type":"ping"}\n\n'
MESSAGE_STOP_FRAME: Final = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
DELTA_HEAD: Final = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
DELTA_END: Final = b"}}\n\n"
STOP_HEAD: Final = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
#: The delta kinds after ``DELTA_HEAD + index``: text, tool input, thinking (in that order).
DELTA_KIND: Final = (
    b',"delta":{"type":"text_delta","text":',
    b',"delta":{"type":"input_json_delta","partial_json":',
    b',"delta":{"type":"thinking_delta","thinking":',
)
SIGNATURE_KIND: Final = b',"delta":{"type":"signature_delta","signature":'


def message_start_frame(message_id: str, model: str, input_tokens: int) -> bytes:
    """``message_start`` with empty content and provisional usage: the SDK accumulator needs
    ``usage`` (§3.4 item 2); the real numbers follow in message_delta, which overwrites them
    (§10 item 7)."""
    return encode_event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "output_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            },
        },
    )


def message_delta_frame(
    reason: StopReason,
    stop_sequence: str | None,
    usage: Usage,
    extra: dict[str, Any] | None = None,
    stop_details: dict[str, Any] | None = None,
) -> bytes:
    """``message_delta`` with the final stop_reason and cumulative usage (§3.3); ``extra``
    adds top-level fields (``context_management``), ``stop_details`` goes in the delta."""
    delta: dict[str, Any] = {"stop_reason": reason, "stop_sequence": stop_sequence}
    if stop_details is not None:
        delta["stop_details"] = stop_details
    doc: dict[str, Any] = {"type": "message_delta", "delta": delta, "usage": usage_doc(usage)}
    if extra:
        doc.update(extra)
    return encode_event("message_delta", doc)


def usage_doc(usage: Usage) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
    }
    if usage.server_tool_use is not msgspec.UNSET:
        doc["server_tool_use"] = usage.server_tool_use
    if usage.output_tokens_details is not msgspec.UNSET:
        doc["output_tokens_details"] = usage.output_tokens_details
    if usage.service_tier is not msgspec.UNSET:
        doc["service_tier"] = usage.service_tier
    if usage.speed is not msgspec.UNSET:
        doc["speed"] = usage.speed
    return doc


def message_frames(message: MessageResponse) -> list[bytes]:
    """A whole Message as the stream a client would have received (answers the gateway makes
    itself, without an upstream): text as one ``text_delta``, a ``server_tool_use`` /
    ``tool_use`` input as one ``input_json_delta``, results whole in their start event."""
    out = [message_start_frame(message.id, message.model, message.usage.input_tokens), PING_FRAME]
    for index, block in enumerate(message.content):
        doc = msgspec.to_builtins(block)
        kind = doc["type"]
        prefix = DELTA_HEAD + str(index).encode()
        if isinstance(block, OutText):
            out += text_block_frames(index, block)
            continue
        if kind in ("tool_use", "server_tool_use"):
            out.append(block_start_frame(index, {**doc, "input": {}}))
            partial = orjson.dumps(doc["input"]).decode()
            out.append(prefix + DELTA_KIND[1] + orjson.dumps(partial) + DELTA_END)
        else:
            out.append(block_start_frame(index, doc))
        out.append(block_stop_frame(index))
    if message.stop_reason is not None:
        extra = None
        if message.context_management is not msgspec.UNSET:
            extra = {"context_management": message.context_management}
        details = None if message.stop_details is msgspec.UNSET else message.stop_details
        out.append(
            message_delta_frame(
                message.stop_reason, message.stop_sequence, message.usage, extra, details
            )
        )
    out.append(MESSAGE_STOP_FRAME)
    return out


def text_block_frames(index: int, block: OutText) -> list[bytes]:
    """A whole text block as it streams: with citations, ``citations: []`` in the start and
    one ``citations_delta`` each before the text (the order Anthropic sends)."""
    cited = block.citations if block.citations is not msgspec.UNSET else None
    start: dict[str, Any] = {"type": "text", "text": ""}
    if cited:
        start["citations"] = []
    out = [block_start_frame(index, start)]
    for citation in cited or ():
        out.append(
            encode_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "citations_delta", "citation": citation},
                },
            )
        )
    out.append(
        DELTA_HEAD + str(index).encode() + DELTA_KIND[0] + orjson.dumps(block.text) + DELTA_END
    )
    out.append(block_stop_frame(index))
    return out


def block_start_frame(index: int, block: dict[str, Any]) -> bytes:
    return encode_event(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def block_stop_frame(index: int) -> bytes:
    return STOP_HEAD + str(index).encode() + b"}\n\n"


def signature_delta_frame(index: int, signature: str) -> bytes:
    """The ``signature_delta`` that precedes a thinking block's stop (§3.2)."""
    return DELTA_HEAD + str(index).encode() + SIGNATURE_KIND + orjson.dumps(signature) + DELTA_END
