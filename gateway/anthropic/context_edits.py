"""``context_management``: the history edits the gateway applies (issue 15 item 4).

Pure: no aiohttp, no asyncio. Anthropic applies these edits server-side before the model sees
the prompt, and the client keeps its whole history; the gateway does the same, as a rewrite of
the request before translation, so the upstream gets the shorter history:

* ``clear_thinking_20251015``: thinking blocks stay in the last ``keep.value`` assistant turns
  (``"all"``: every turn, Claude Code's default, a no-op); older ones are dropped. A turn is
  the assistant's messages between two user messages of the user's own (tool results do not
  start one). It needs thinking on, as the API says.
* ``clear_tool_uses_20250919``: once the prompt passes ``trigger`` (input tokens, default
  100 000, or a number of tool uses), the results of all but the ``keep`` most recent tool
  uses (default 3) are replaced by a placeholder, oldest first, except ``exclude_tools``;
  ``clear_tool_inputs`` empties their inputs too. With ``clear_at_least``, nothing is cleared
  unless that many tokens would go.

Tokens are counted by the ``count`` callable; the handlers pass the gateway's rough estimate
(four characters a token): the thresholds are Claude's tokens, which no OpenAI tokenizer
gives either, and it costs nothing on the hot path. ``applied_edits`` reports each edit that
cleared something, as the API does.
``compact_20260112`` is the Responses route's native compaction (:mod:`.compaction`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import orjson

from ..errors import InvalidRequestError
from ..schemas.anthropic import (
    ContextEdit,
    ImageBlock,
    Message,
    MessagesRequest,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

CLEAR_TOOL_USES: Final = "clear_tool_uses_20250919"
CLEAR_THINKING: Final = "clear_thinking_20251015"
COMPACT: Final = "compact_20260112"
#: what a cleared tool result says (Anthropic does not publish its own wording)
PLACEHOLDER: Final = "[Old tool result content cleared]"
DEFAULT_TRIGGER: Final = 100_000
DEFAULT_KEEP: Final = 3
MIN_COMPACT_TRIGGER: Final = 50_000
#: an image's tokens in the estimate (count_tokens uses the same)
IMAGE_TOKENS: Final = 765

Count = Callable[[str], int]


def rough_count(text: str) -> int:
    """About four characters a token (the ``count`` the handlers use)."""
    return (len(text) + 3) // 4


@dataclass(frozen=True, slots=True)
class EditPlan:
    """The request's edits, validated."""

    clear_thinking: ContextEdit | None = None
    clear_tool_uses: ContextEdit | None = None
    compact: ContextEdit | None = None


def edit_plan(req: MessagesRequest) -> EditPlan | None:
    """None without ``context_management``; a 400 for an edit the API would refuse."""
    cm = req.context_management
    if cm is None:
        return None
    edits = cm.edits or []
    found: dict[str, ContextEdit] = {}
    for i, edit in enumerate(edits):
        where = f"context_management.edits.{i}"
        if edit.type not in (CLEAR_TOOL_USES, CLEAR_THINKING, COMPACT):
            raise InvalidRequestError(
                f"{where}.type: unknown edit {edit.type!r} (expected {CLEAR_TOOL_USES}, "
                f"{CLEAR_THINKING} or {COMPACT})"
            )
        if edit.type in found:
            raise InvalidRequestError(f"{where}.type: {edit.type} is given twice")
        found[edit.type] = edit
        if edit.type == CLEAR_THINKING:
            if i != 0:
                raise InvalidRequestError(
                    f"{where}: {CLEAR_THINKING} must be listed first in edits"
                )
            thinking = req.thinking
            if thinking is None or thinking.type not in ("enabled", "adaptive"):
                raise InvalidRequestError(
                    f"`{CLEAR_THINKING}` strategy requires `thinking` to be enabled or adaptive"
                )
            _keep_turns(edit, where)
        elif edit.type == CLEAR_TOOL_USES:
            _positive(edit.trigger, ("input_tokens", "tool_uses"), f"{where}.trigger")
            _positive(edit.keep, ("tool_uses",), f"{where}.keep")
            _positive(edit.clear_at_least, ("input_tokens",), f"{where}.clear_at_least")
        else:
            value = _positive(edit.trigger, ("input_tokens",), f"{where}.trigger")
            if value is not None and value < MIN_COMPACT_TRIGGER:
                raise InvalidRequestError(
                    f"{where}.trigger.value: must be at least {MIN_COMPACT_TRIGGER}"
                )
    return EditPlan(
        clear_thinking=found.get(CLEAR_THINKING),
        clear_tool_uses=found.get(CLEAR_TOOL_USES),
        compact=found.get(COMPACT),
    )


def _positive(value: Any, kinds: tuple[str, ...], where: str) -> int | None:
    """The ``{type, value}`` threshold's value (None when absent); a 400 when malformed."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in kinds:
        raise InvalidRequestError(f"{where}: expected {{type: {' | '.join(kinds)}, value}}")
    n = value.get("value")
    if type(n) is not int or n < 0:
        raise InvalidRequestError(f"{where}.value: must be a non-negative integer")
    return n


def _keep_turns(edit: ContextEdit, where: str) -> int | None:
    """Turns of thinking to keep; None for all."""
    keep = edit.keep
    if keep is None:
        return 1  # the API's documented default
    if keep == "all" or (isinstance(keep, dict) and keep.get("type") == "all"):
        return None
    n = _positive(keep, ("thinking_turns",), f"{where}.keep")
    if n is None or n < 1:
        raise InvalidRequestError(f"{where}.keep.value: must be at least 1")
    return n


# ---------------------------------------------------------------------------------------------
# Applying them


def apply_edits(
    req: MessagesRequest, plan: EditPlan, count: Count
) -> tuple[MessagesRequest, list[dict[str, Any]]]:
    """The request with its history edited, and the ``applied_edits`` to report."""
    applied: list[dict[str, Any]] = []
    messages = list(req.messages)
    if plan.clear_thinking is not None:
        keep = _keep_turns(plan.clear_thinking, "context_management.edits.0")
        if keep is not None:
            messages, turns, tokens = _clear_thinking(messages, keep, count)
            if turns:
                applied.append({"type": CLEAR_THINKING, "cleared_thinking_turns": turns,
                                "cleared_input_tokens": tokens})  # fmt: skip
    if plan.clear_tool_uses is not None:
        messages, entry = _clear_tool_uses(req, messages, plan.clear_tool_uses, count)
        if entry is not None:
            applied.append(entry)
    if not applied:
        return req, applied
    return msgspec.structs.replace(req, messages=messages), applied


def _turn_starts(messages: list[Message]) -> list[int]:
    """Indices of the user messages that begin a new turn (not only tool results)."""
    starts = []
    for i, msg in enumerate(messages):
        if msg.role != "user":
            continue
        if isinstance(msg.content, str) or any(
            not isinstance(b, ToolResultBlock) for b in msg.content
        ):
            starts.append(i)
    return starts


def _clear_thinking(
    messages: list[Message], keep: int, count: Count
) -> tuple[list[Message], int, int]:
    # assistant turns: groups of assistant messages split at real user messages
    groups: list[list[int]] = []
    current: list[int] = []
    starts = set(_turn_starts(messages))
    for i, msg in enumerate(messages):
        if i in starts and current:
            groups.append(current)
            current = []
        if msg.role == "assistant":
            current.append(i)
    if current:
        groups.append(current)
    old = groups[:-keep] if keep < len(groups) else []
    turns = tokens = 0
    out = list(messages)
    for group in old:
        cleared = False
        for i in group:
            msg = out[i]
            if isinstance(msg.content, str):
                continue
            kept = [
                b for b in msg.content if not isinstance(b, ThinkingBlock | RedactedThinkingBlock)
            ]
            if len(kept) == len(msg.content):
                continue
            for b in msg.content:
                if isinstance(b, ThinkingBlock):
                    tokens += count(b.thinking)
                elif isinstance(b, RedactedThinkingBlock):
                    tokens += len(b.data) // 4
            out[i] = msgspec.structs.replace(msg, content=kept)
            cleared = True
        turns += cleared
    return out, turns, tokens


def _result_cost(block: ToolResultBlock, count: Count) -> int:
    content = block.content
    if content is None:
        return 0
    if isinstance(content, str):
        return count(content)
    total = 0
    for part in content:
        if isinstance(part, TextBlock):
            total += count(part.text)
        elif isinstance(part, ImageBlock):
            total += IMAGE_TOKENS
        else:  # documents, search results: their JSON, at about four bytes a token
            total += len(msgspec.json.encode(part)) // 4
    return total


def _prompt_tokens(req: MessagesRequest, messages: list[Message], count: Count) -> int:
    texts: list[str] = []
    images = 0
    if isinstance(req.system, str):
        texts.append(req.system)
    elif req.system:
        texts += [b.text for b in req.system]
    if req.tools:
        texts.append(msgspec.json.encode(req.tools).decode())
    for msg in messages:
        if isinstance(msg.content, str):
            texts.append(msg.content)
            continue
        for b in msg.content:
            if isinstance(b, TextBlock):
                texts.append(b.text)
            elif isinstance(b, ThinkingBlock):
                texts.append(b.thinking)
            elif isinstance(b, ImageBlock):
                images += 1
            elif isinstance(b, ToolResultBlock):
                texts.append(msgspec.json.encode(b.content).decode() if b.content else "")
            else:
                texts.append(msgspec.json.encode(b).decode())
    return count("\n".join(texts)) + images * IMAGE_TOKENS


def _clear_tool_uses(
    req: MessagesRequest, messages: list[Message], edit: ContextEdit, count: Count
) -> tuple[list[Message], dict[str, Any] | None]:
    uses: list[tuple[int, int, ToolUseBlock]] = [
        (i, j, b)
        for i, m in enumerate(messages)
        if m.role == "assistant" and not isinstance(m.content, str)
        for j, b in enumerate(m.content)
        if isinstance(b, ToolUseBlock)
    ]
    trigger = edit.trigger or {"type": "input_tokens", "value": DEFAULT_TRIGGER}
    if trigger["type"] == "tool_uses":
        if len(uses) <= trigger["value"]:
            return messages, None
    elif _prompt_tokens(req, messages, count) <= trigger["value"]:
        return messages, None
    keep = edit.keep.get("value", DEFAULT_KEEP) if isinstance(edit.keep, dict) else DEFAULT_KEEP
    excluded = set(edit.exclude_tools or ())
    inputs = edit.clear_tool_inputs
    candidates = [u for u in uses[: max(0, len(uses) - keep)] if u[2].name not in excluded]
    if not candidates:
        return messages, None
    by_id = {u[2].id: u for u in candidates}
    placeholder = count(PLACEHOLDER)
    gain = 0
    cleared: set[str] = set()
    out = list(messages)
    # results: wherever the client put them
    for i, msg in enumerate(out):
        if msg.role != "user" or isinstance(msg.content, str):
            continue
        blocks = list(msg.content)
        changed = False
        for j, b in enumerate(blocks):
            if isinstance(b, ToolResultBlock) and b.tool_use_id in by_id:
                if b.content == PLACEHOLDER:
                    continue  # cleared on an earlier turn: nothing more to gain
                gain += max(0, _result_cost(b, count) - placeholder)
                blocks[j] = msgspec.structs.replace(b, content=PLACEHOLDER)
                cleared.add(b.tool_use_id)
                changed = True
        if changed:
            out[i] = msgspec.structs.replace(msg, content=blocks)
    # inputs, when asked
    for i, j, use in candidates:
        if not (inputs is True or (isinstance(inputs, list) and use.name in inputs)):
            continue
        if use.input in (None, {}):
            continue
        gain += count(orjson.dumps(use.input).decode())
        msg = out[i]
        assert not isinstance(msg.content, str)
        blocks = list(msg.content)
        blocks[j] = msgspec.structs.replace(use, input={})
        out[i] = msgspec.structs.replace(msg, content=blocks)
        cleared.add(use.id)
    at_least = (edit.clear_at_least or {}).get("value")
    if not cleared or (at_least is not None and gain < at_least):
        return messages, None
    return out, {"type": CLEAR_TOOL_USES, "cleared_tool_uses": len(cleared),
                 "cleared_input_tokens": gain}  # fmt: skip
