"""Content blocks the gateway does not know, in a request's history (issue 15 item 3).

Pure: no aiohttp, no asyncio. The API grows a block type every few months (``compaction``,
``advisor_tool_result``, ``browser_state`` …); a client that echoes one back must not get a 400
(protocol.md §10.16). A block that carries text (a string ``text`` or ``content``, or a list of
text blocks) becomes a text block with it; any other becomes an empty text block, which the
translators drop. Only the slow path: a body is
rewritten only after msgspec refused an unknown ``type`` in it.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from ..schemas.anthropic import AnyContentBlock, ToolResultContent

#: a msgspec error for an unknown block type: in a message's content, or a tool result's
UNKNOWN_TYPE: Final = re.compile(
    r"^Invalid value '.*' - at `\$\.messages\[\d+\]\.content\[\d+\](\.content\[\d+\])?\.type`$"
)


def _tags(union: Any) -> frozenset[str]:
    classes = getattr(union, "__args__", (union,))
    return frozenset(c.__struct_config__.tag for c in classes)


KNOWN: Final = _tags(AnyContentBlock)
KNOWN_IN_RESULTS: Final = _tags(ToolResultContent)


def is_unknown_block_error(exc: msgspec.ValidationError) -> bool:
    return UNKNOWN_TYPE.match(str(exc)) is not None


def _as_text(block: dict[str, Any]) -> str | None:
    for key in ("text", "content"):
        value = block.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            texts = [b.get("text") for b in value if isinstance(b, dict)]
            parts = [t for t in texts if isinstance(t, str)]
            if parts:
                return "\n".join(parts)
    return None


def _rewrite(blocks: list[Any], known: frozenset[str], seen: list[str]) -> list[Any]:
    out: list[Any] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(kind, str) or kind in known:
            out.append(block)  # known, or malformed: msgspec says what is wrong with it
            continue
        seen.append(kind)
        # an empty text block stands in for a dropped one (translators skip empty text), so
        # the indices in any later error message are the client's own
        out.append({"type": "text", "text": _as_text(block) or ""})
    return out


def tolerate_unknown_blocks(doc: Any) -> list[str]:
    """Rewrite the unknown blocks of a decoded request body in place (see the module doc);
    returns their types, in order."""
    seen: list[str] = []
    messages = doc.get("messages") if isinstance(doc, dict) else None
    for msg in messages if isinstance(messages, list) else ():
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list):
            continue
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                inner = block.get("content")
                if isinstance(inner, list):
                    block["content"] = _rewrite(inner, KNOWN_IN_RESULTS, seen)
        msg["content"] = _rewrite(content, KNOWN, seen)
    return seen
