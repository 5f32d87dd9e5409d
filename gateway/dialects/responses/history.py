"""The conversation as Responses input items (protocol.md §5, §9.2-§9.5, §9.10).

Pure: imports neither aiohttp nor asyncio. :class:`InputBuilder` turns the Anthropic messages
into ``input`` items that satisfy the Responses validation rules on their own (the upstream is
used statelessly): every ``function_call`` has its ``function_call_output`` and vice versa, a
``reasoning`` item (rebuilt from a gateway-signed thinking block) is followed by the item it
produced, item ids are only sent on reasoning items, ``call_id`` is at most 64 characters.
Content parts are ``input_text`` / ``input_image`` / ``input_file`` for the user and
``output_text`` for the assistant.
"""

from __future__ import annotations

from typing import Any, Final

from ...anthropic.compaction import SUMMARY_HEAD, upstream_compaction
from ...anthropic.ids import call_id_to_upstream
from ...anthropic.parts import (
    NO_RESULT,
    document_parts,
    image_url,
    search_result_text,
    tool_reference_text,
    tool_result_parts,
)
from ...anthropic.request import (
    system_message_texts,
)
from ...anthropic.server_tools import server_block_text
from ...anthropic.signatures import Signer
from ...anthropic.tool_schema import upstream_tool_name
from ...anthropic.tools import tool_arguments
from ...cache import BoundedCache
from ...schemas.anthropic import (
    CompactionBlock,
    DocumentBlock,
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    SearchResultBlock,
    ServerArtefact,
    TextBlock,
    ThinkingBlock,
    ToolReferenceBlock,
    ToolResultBlock,
    ToolUseBlock,
    UpstreamFileSource,
)

# session_id_from and tool_name_map are dialect-neutral (content.py); re-exported for callers.
__all__ = ["InputBuilder"]


def _input_text(text: str) -> dict[str, Any]:
    return {"type": "input_text", "text": text}


class _Parts:
    """Responses input parts (protocol.md §5, §9.4) for the shared content helpers."""

    __slots__ = ()
    text_type: Final = "input_text"

    def text(self, text: str) -> dict[str, Any]:
        return {"type": "input_text", "text": text}

    def image(self, block: ImageBlock, path: str) -> dict[str, Any]:
        src: Any = block.source
        if isinstance(src, UpstreamFileSource):
            return self.upstream_file(src, "image", path)
        # ``detail`` is required by the Responses schema (protocol.md §5).
        return {"type": "input_image", "image_url": image_url(block, path), "detail": "auto"}

    def upstream_file(self, src: UpstreamFileSource, kind: str, path: str) -> dict[str, Any]:
        if kind == "image":
            return {"type": "input_image", "file_id": src.file_id, "detail": "auto"}
        return {"type": "input_file", "file_id": src.file_id}

    def pdf(self, filename: str, data_url: str) -> dict[str, Any]:
        return {"type": "input_file", "filename": filename, "file_data": data_url}

    def pdf_url(self, url: str, path: str) -> dict[str, Any]:
        return {"type": "input_file", "file_url": url}


_PARTS: Final = _Parts()
_input_text = _PARTS.text
_image_part = _PARTS.image


class InputBuilder:
    """Builds the ``input`` list from ``messages`` in one pass (protocol.md §9.2).

    Orphans are hard 400s upstream (protocol.md §5), so: a tool_result whose call did not come
    earlier (or was already answered) is dropped, and a tool_use that no later tool_result
    answers gets a synthetic ``"(no result)"`` output right after its assistant turn. That
    includes the calls of a trailing assistant message (a prefill continuation): OpenAI needs
    the output there too.
    """

    __slots__ = ("_answered", "_called", "_items", "_results_at", "_signer", "_with_reasoning")

    def __init__(self, signer: Signer, *, with_reasoning: bool) -> None:
        self._signer = signer
        self._with_reasoning = with_reasoning
        self._items: list[dict[str, Any]] = []
        self._called: set[str] = set()
        self._answered: set[str] = set()
        #: upstream call_id → index of the last message holding a tool_result for it
        self._results_at: dict[str, int] = {}

    def build(self, messages: list[Message]) -> list[dict[str, Any]]:
        results_at = self._results_at
        for i, msg in enumerate(messages):
            if msg.role == "user" and not isinstance(msg.content, str):
                for block in msg.content:
                    if type(block) is ToolResultBlock:
                        results_at[call_id_to_upstream(block.tool_use_id)] = i
        for i, msg in enumerate(messages):
            if msg.role == "user":
                self._user(msg, i)
            elif msg.role == "assistant":
                self._assistant(msg, i)
            else:
                self._system(msg)
        return self._items

    def _system(self, msg: Message) -> None:
        # Claude Code's mid-conversation system message (claude-code.md §3, §9.1): a developer
        # message in place; Responses has no system role inside a stateless history.
        parts = [_input_text(t) for t in system_message_texts(msg)]
        if parts:
            self._items.append({"role": "developer", "content": parts})

    def _user(self, msg: Message, i: int) -> None:
        content = msg.content
        items = self._items
        if isinstance(content, str):
            if content:
                items.append({"role": "user", "content": [_input_text(content)]})
            return
        parts: list[dict[str, Any]] = []
        for j, block in enumerate(content):
            kind = type(block)
            if kind is TextBlock:
                if block.text:
                    parts.append({"type": "input_text", "text": block.text})
            elif kind is ToolResultBlock:
                # Tool outputs go before the rest of the user turn (protocol.md §9.2): they
                # must follow their calls, and the user's text comes after the results.
                call_id = call_id_to_upstream(block.tool_use_id)
                if call_id in self._called and call_id not in self._answered:
                    self._answered.add(call_id)
                    output = tool_result_parts(block, f"messages.{i}.content.{j}", _PARTS)
                    items.append(
                        {"type": "function_call_output", "call_id": call_id, "output": output}
                    )
            elif kind is ImageBlock:
                parts.append(_image_part(block, f"messages.{i}.content.{j}"))
            elif kind is DocumentBlock:
                parts.extend(document_parts(block, f"messages.{i}.content.{j}", _PARTS))
            elif kind is SearchResultBlock:
                parts.append(_input_text(search_result_text(block)))
            elif kind is ToolReferenceBlock:
                parts.append(_input_text(tool_reference_text(block)))
            elif kind in ServerArtefact:
                note = server_block_text(block, self._signer)
                if note:
                    parts.append(_input_text(note))
            # tool_use / thinking in a user turn: nothing upstream.
        if parts:
            items.append({"role": "user", "content": parts})

    def _assistant(self, msg: Message, i: int) -> None:
        content = msg.content
        items = self._items
        if isinstance(content, str):
            if content:
                items.append(_assistant_message([_output_text(content)]))
            return
        turn: list[dict[str, Any]] = []
        text: list[dict[str, Any]] = []
        unanswered: list[str] = []
        for block in content:
            kind = type(block)
            if kind is TextBlock:
                if block.text:
                    text.append(_output_text(block.text))
            elif kind is ToolUseBlock:
                if text:
                    turn.append(_assistant_message(text))
                    text = []
                call_id = call_id_to_upstream(block.id)
                turn.append(
                    {
                        "type": "function_call",
                        "call_id": call_id,
                        "name": upstream_tool_name(block.name),
                        "arguments": tool_arguments(block),
                    }
                )
                self._called.add(call_id)
                if self._results_at.get(call_id, -1) <= i:
                    unanswered.append(call_id)
            elif kind is ThinkingBlock or kind is RedactedThinkingBlock:
                item = self._reasoning_item(block)
                if item is not None:
                    if text:
                        turn.append(_assistant_message(text))
                        text = []
                    turn.append(item)
            elif kind is CompactionBlock:
                # the upstream's own compaction item again, or the summary as text (issue 15)
                sealed = upstream_compaction(block, self._signer)
                if sealed is not None:
                    if text:
                        turn.append(_assistant_message(text))
                        text = []
                    turn.append({"type": "compaction", "encrypted_content": sealed})
                elif block.content:
                    text.append(_output_text(SUMMARY_HEAD + block.content))
            elif kind in ServerArtefact:
                # Earlier hosted-tool calls as text: the upstream runs stateless, so their
                # items cannot be replayed (issue 14); the model still sees what they found.
                note = server_block_text(block, self._signer)
                if note:
                    text.append(_output_text(note))
            # images and documents: not allowed upstream in an assistant turn.
        if text:
            turn.append(_assistant_message(text))
        # A reasoning item must be followed by the item it produced (protocol.md §9.10).
        while turn and turn[-1].get("type") == "reasoning":
            turn.pop()
        items.extend(turn)
        for call_id in unanswered:
            self._answered.add(call_id)
            items.append({"type": "function_call_output", "call_id": call_id, "output": NO_RESULT})

    def _reasoning_item(
        self, block: ThinkingBlock | RedactedThinkingBlock
    ) -> dict[str, Any] | None:
        """A reasoning item for a thinking block this gateway minted, else None.

        Real Claude signatures, ``""`` (Claude Code echoes unsigned thinking that way,
        claude-code.md §4) and edited tokens fail ``Signer.decode``. A token without
        encrypted content is useless too: with ``store: false`` the upstream cannot look the
        item up by id.
        """
        if not self._with_reasoning:
            return None
        if isinstance(block, ThinkingBlock):
            token, text = block.signature, block.thinking
        else:
            token, text = block.data, ""
        decoded = _decode_signature(self._signer, token) if token else None
        if decoded is None or decoded[1] is None:
            return None
        rs_id, encrypted = decoded
        return {
            "type": "reasoning",
            "id": rs_id,
            "summary": [{"type": "summary_text", "text": text}] if text else [],
            "encrypted_content": encrypted,
        }


# Bounded by bytes too (issue 10 item 6): a token and its decoded form cost about twice its
# length, and a forged token can be megabytes.
_signature_cache: Final[BoundedCache[tuple[Signer, str], tuple[str, str | None] | None]] = (
    BoundedCache(max_entries=512, max_bytes=16 * 1024 * 1024, max_entry_bytes=1024 * 1024)
)


def _decode_signature(signer: Signer, token: str) -> tuple[str, str | None] | None:
    """``signer.decode(token)``, memoised: every request of a session re-sends all earlier
    thinking blocks, and the HMAC check dominated translation time without the cache. Keyed
    by the signer object itself (held, so its id is never reused) and the exact token."""
    key = (signer, token)
    hit = _signature_cache.get(key)
    if hit is not None:
        return hit[0]
    decoded = signer.decode(token)
    _signature_cache.put(key, decoded, 2 * len(token))
    return decoded


def _output_text(text: str) -> dict[str, Any]:
    # Assistant history uses output_text parts (protocol.md §5, §10.10).
    return {"type": "output_text", "text": text, "annotations": []}


def _assistant_message(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"role": "assistant", "content": parts}
