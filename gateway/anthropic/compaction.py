"""``compact_20260112``: compaction as the Responses API's own (issue 15 item 4).

Pure: no aiohttp, no asyncio. Anthropic summarises a long conversation into a ``compaction``
block when the prompt passes ``trigger`` and, on later turns, ignores everything before that
block. The Responses API does the same with its ``context_management`` compaction, whose
``compaction`` item is opaque and works statelessly: the gateway asks for it on routes that
support it (a Responses upstream with ``compaction`` on) and gives the item back as a
``compaction`` block whose ``encrypted_content`` it signs, and whose ``content`` says that the
summary is opaque (there is no readable summary to give). On the next turn that block becomes
the compaction item again, and everything before it is dropped, as the API does.

A ``compaction`` block the gateway did not make (from Claude itself), or one on a route that
cannot read it, becomes its summary text. ``instructions`` cannot be honoured upstream (OpenAI
writes its own summary): a 400, as on a route without compaction.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ..errors import InvalidRequestError
from ..schemas.anthropic import CompactionBlock, Message, MessagesRequest, TextBlock
from ..schemas.anthropic_out import MessageResponse, OutCompaction
from ..settings import Route
from .context_edits import COMPACT
from .signatures import Signer

#: ``encrypted_content`` of the compaction blocks the gateway makes
COMPACTION_TOKEN: Final = "gwcmp1."
#: the ``content`` of those blocks: OpenAI's compaction has no readable summary
COMPACTED: Final = (
    "[The earlier conversation was compacted by the upstream model; its summary is opaque "
    "and travels in encrypted_content.]"
)
#: Anthropic's default trigger
DEFAULT_TRIGGER: Final = 150_000
SUMMARY_HEAD: Final = "Summary of the earlier conversation:\n"


def compaction_threshold(req: MessagesRequest, route: Route) -> int | None:
    """The ``compact_threshold`` to ask the upstream for, or None without the edit; a 400
    when the route cannot compact or the edit asks what cannot be honoured."""
    cm = req.context_management
    for i, edit in enumerate((cm.edits or []) if cm is not None else ()):
        if edit.type != COMPACT:
            continue
        where = f"context_management.edits.{i}"
        if not route.compaction:
            raise InvalidRequestError(
                f"{where}: {COMPACT} needs an upstream that compacts (the Responses API with "
                f"compaction on); route {route.name!r} does not"
            )
        if edit.instructions:
            raise InvalidRequestError(
                f"{where}.instructions: not supported: the upstream's compaction writes its "
                "own summary"
            )
        trigger = edit.trigger
        value = trigger.get("value") if isinstance(trigger, dict) else None
        return value if isinstance(value, int) else DEFAULT_TRIGGER
    return None


def pauses(req: MessagesRequest) -> bool:
    """Whether the answer stops after a compaction (``pause_after_compaction``)."""
    cm = req.context_management
    return any(
        e.type == COMPACT and bool(e.pause_after_compaction)
        for e in ((cm.edits or []) if cm is not None else ())
    )


def compaction_block(item_id: str | None, encrypted: str | None, signer: Signer) -> OutCompaction:
    """The Anthropic block of an upstream compaction item."""
    token = signer.seal(COMPACTION_TOKEN, {"id": item_id, "e": encrypted})
    return OutCompaction(content=COMPACTED, encrypted_content=token)


def upstream_compaction(block: CompactionBlock, signer: Signer) -> str | None:
    """The upstream's ``encrypted_content`` inside a block the gateway made, else None."""
    sealed = signer.unseal(COMPACTION_TOKEN, block.encrypted_content or "")
    value = sealed.get("e") if isinstance(sealed, dict) else None
    return value if isinstance(value, str) and value else None


def replay(req: MessagesRequest, signer: Signer, *, native: bool) -> MessagesRequest:
    """Everything before the last effective compaction block dropped (a block with no
    summary is a no-op). ``native``: the route reads the upstream's items back, so a block
    the gateway made stays for the translator; any other becomes its summary as text."""
    last: tuple[int, int] | None = None
    for i, msg in enumerate(req.messages):
        if isinstance(msg.content, str):
            continue
        for j, block in enumerate(msg.content):
            if isinstance(block, CompactionBlock) and block.content is not None:
                last = (i, j)
    if last is None:  # only no-op blocks, if any: gone
        return msgspec.structs.replace(
            req, messages=[_without_compactions(m) for m in req.messages]
        )
    i, j = last
    msg = req.messages[i]
    assert not isinstance(msg.content, str)
    head = msg.content[j]
    assert isinstance(head, CompactionBlock)
    rest: list[Any] = [b for b in msg.content[j + 1 :] if not isinstance(b, CompactionBlock)]
    if not (native and upstream_compaction(head, signer) is not None):
        head = TextBlock(text=SUMMARY_HEAD + (head.content or ""))
    first = msgspec.structs.replace(msg, content=[head, *rest])
    messages: list[Message] = [first, *(_without_compactions(m) for m in req.messages[i + 1 :])]
    return msgspec.structs.replace(req, messages=messages)


def _without_compactions(msg: Message) -> Message:
    if isinstance(msg.content, str) or not any(isinstance(b, CompactionBlock) for b in msg.content):
        return msg
    return msgspec.structs.replace(
        msg, content=[b for b in msg.content if not isinstance(b, CompactionBlock)]
    )


def pause_at_compaction(message: MessageResponse) -> None:
    """``pause_after_compaction``: a JSON answer that compacted ends with the compaction."""
    for i, block in enumerate(message.content):
        if isinstance(block, OutCompaction):
            message.content = message.content[: i + 1]
            message.stop_reason = "compaction"
            message.stop_sequence = None
            return
