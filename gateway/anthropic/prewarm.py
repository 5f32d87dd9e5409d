"""``max_tokens: 0``: a cache pre-warm (protocol.md §10.15, issue 15 item 6).

Pure: no aiohttp, no asyncio. Nothing is generated: the answer is empty, ``stop_reason`` is
``max_tokens``, and its usage carries the input count the gateway took instead (the upstream's
count where it has one, else the local estimate). OpenAI caches a prefix only when a generation
reads it, so no upstream cache is warmed; the request still costs no output tokens.
"""

from __future__ import annotations

from ..schemas.anthropic import MessagesRequest
from ..schemas.anthropic_out import MessageResponse, Usage
from .ids import message_id


def prewarm_answer(req: MessagesRequest, input_tokens: int) -> MessageResponse:
    return MessageResponse(
        id=message_id(),
        model=req.model,
        content=[],
        stop_reason="max_tokens",
        usage=Usage(input_tokens=input_tokens, output_tokens=0),
    )
