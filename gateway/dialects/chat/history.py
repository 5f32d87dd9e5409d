"""Anthropic messages → Chat Completions ``messages`` (protocol.md §8, §9.2-§9.5, §10 item 11).

Pure: imports neither aiohttp nor asyncio.

Conversation rules (protocol.md §9.2, §10.11): every assistant message with ``tool_calls`` is
followed at once by one ``role: "tool"`` message per call, in call order: the call's
tool_result wherever the client put it, else ``"(no result)"``. tool_results whose call never
came (or was answered already) are dropped. Tool messages are text only, so images and PDFs
of tool results move to ONE user message after the last tool message of that turn, merged
with the user's own following content.
"""

from __future__ import annotations

from typing import Any, Final

from ...anthropic.compaction import SUMMARY_HEAD
from ...anthropic.ids import call_id_to_upstream
from ...anthropic.parts import (
    NO_RESULT,
    document_parts,
    image_url,
    search_result_text,
    tool_reference_text,
    tool_result_parts,
)
from ...anthropic.request import system_message_texts, system_text
from ...anthropic.server_tools import server_block_text
from ...anthropic.tool_schema import upstream_tool_name
from ...anthropic.tools import tool_arguments
from ...errors import InvalidRequestError
from ...schemas.anthropic import (
    CompactionBlock,
    DocumentBlock,
    ImageBlock,
    Message,
    MessagesRequest,
    SearchResultBlock,
    ServerArtefact,
    TextBlock,
    ThinkingBlock,
    ToolReferenceBlock,
    ToolResultBlock,
    ToolUseBlock,
    UpstreamFileSource,
)
from ...settings import Route

__all__ = ["ATTACHMENTS_FOLLOW", "IMAGE_OMITTED", "Messages"]

#: Shown to text-only models instead of an image (route ``images = false``).
IMAGE_OMITTED: Final = "[image omitted: the model does not accept images]"
#: Tool message text when the result held only attachments (they follow in a user message).
ATTACHMENTS_FOLLOW: Final = "(attachments in the next message)"


# ---------------------------------------------------------------------------------------------
# Content parts (protocol.md §8, §9.4)


class _Parts:
    """Chat user-content parts for the shared content helpers."""

    __slots__ = ()
    text_type: Final = "text"

    def text(self, text: str) -> dict[str, Any]:
        return {"type": "text", "text": text}

    def image(self, block: ImageBlock, path: str) -> dict[str, Any]:
        return {"type": "image_url", "image_url": {"url": image_url(block, path)}}

    def pdf(self, filename: str, data_url: str) -> dict[str, Any]:
        return {"type": "file", "file": {"filename": filename, "file_data": data_url}}

    def upstream_file(self, src: UpstreamFileSource, kind: str, path: str) -> dict[str, Any]:
        if kind == "document" and src.mime_type == "application/pdf":
            return {"type": "file", "file": {"file_id": src.file_id}}
        raise InvalidRequestError(
            f"{path}.source: Chat Completions upstreams take only PDFs by file_id, not "
            f"{src.mime_type}"
        )

    def pdf_url(self, url: str, path: str) -> dict[str, Any]:
        raise InvalidRequestError(
            f"{path}.source: PDF documents by URL are not supported by Chat Completions "
            "upstreams; send the PDF as base64"
        )


class _TextOnlyParts(_Parts):
    """For routes whose model takes no images: each image becomes a short note, so the model
    knows something was there (file_id sources are still a 400, as everywhere)."""

    __slots__ = ()

    def image(self, block: ImageBlock, path: str) -> dict[str, Any]:
        image_url(block, path)
        return {"type": "text", "text": IMAGE_OMITTED}


_PARTS: Final = _Parts()
_TEXT_ONLY: Final = _TextOnlyParts()


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only content as one string (text blocks joined by a newline, as vLLM itself joins
    text parts; some servers' templates take only strings), else the part list."""
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


# ---------------------------------------------------------------------------------------------
# Messages


class Messages:
    """Builds ``messages`` in one pass over the request (module docstring for the rules)."""

    __slots__ = (
        "_called",
        "_carry",
        "_merge_system",
        "_mid_system",
        "_out",
        "_parts",
        "_results",
        "_thinking_field",
    )

    def __init__(self, route: Route) -> None:
        self._parts: _Parts = _PARTS if route.images else _TEXT_ONLY
        self._thinking_field = route.thinking_field
        self._merge_system = route.mid_system == "merge"
        self._mid_system: list[str] = []
        self._out: list[dict[str, Any]] = []
        self._called: set[str] = set()
        #: upstream call id → (message index, block index, block) of its first tool_result
        self._results: dict[str, tuple[int, int, ToolResultBlock]] = {}
        #: tool-result attachments waiting for the next user message
        self._carry: list[dict[str, Any]] = []

    def build(self, req: MessagesRequest) -> list[dict[str, Any]]:
        system = system_text(req.system)
        if system:
            self._out.append({"role": "system", "content": system})
        results = self._results
        for i, msg in enumerate(req.messages):
            if msg.role == "user" and not isinstance(msg.content, str):
                for j, block in enumerate(msg.content):
                    if type(block) is ToolResultBlock:
                        results.setdefault(call_id_to_upstream(block.tool_use_id), (i, j, block))
        for i, msg in enumerate(req.messages):
            if msg.role == "user":
                self._user(msg, i)
                continue
            self._flush_carry()
            if msg.role == "assistant":
                self._assistant(msg, i)
            else:
                # Claude Code's mid-conversation system message (claude-code.md §3): a
                # system message in place (protocol.md §9.1, Chat column).
                texts = system_message_texts(msg)
                if texts and self._merge_system:
                    self._mid_system += texts
                elif texts:
                    self._out.append({"role": "system", "content": "\n\n".join(texts)})
        self._flush_carry()
        if self._mid_system:
            merged = "\n\n".join(self._mid_system)
            if system:
                self._out[0]["content"] = f"{system}\n\n{merged}"
            else:
                self._out.insert(0, {"role": "system", "content": merged})
        return self._out

    def _flush_carry(self) -> None:
        if self._carry:
            self._out.append({"role": "user", "content": self._carry})
            self._carry = []

    def _user(self, msg: Message, i: int) -> None:
        content = msg.content
        if isinstance(content, str):
            if self._carry:
                if content:
                    self._carry.append({"type": "text", "text": content})
                self._flush_carry()
            elif content:
                self._out.append({"role": "user", "content": content})
            return
        parts = self._carry
        self._carry = []
        maker = self._parts
        for j, block in enumerate(content):
            kind = type(block)
            if kind is TextBlock:
                if block.text:
                    parts.append({"type": "text", "text": block.text})
            elif kind is ImageBlock:
                parts.append(maker.image(block, f"messages.{i}.content.{j}"))
            elif kind is DocumentBlock:
                parts.extend(document_parts(block, f"messages.{i}.content.{j}", maker))
            elif kind is SearchResultBlock:
                parts.append(maker.text(search_result_text(block)))
            elif kind is ToolReferenceBlock:
                parts.append(maker.text(tool_reference_text(block)))
            elif kind in ServerArtefact:
                note = server_block_text(block)
                if note:
                    parts.append(maker.text(note))
            # tool_result: answered right after its call (or an orphan, dropped); tool_use /
            # thinking in a user turn: nothing upstream.
        if parts:
            self._out.append({"role": "user", "content": _content(parts)})

    def _assistant(self, msg: Message, i: int) -> None:
        content = msg.content
        if isinstance(content, str):
            if content:
                self._out.append({"role": "assistant", "content": content})
            return
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in content:
            kind = type(block)
            if kind is TextBlock:
                if block.text:
                    texts.append(block.text)
            elif kind is ToolUseBlock:
                call_id = call_id_to_upstream(block.id)
                if call_id in self._called:
                    continue  # a repeated id would need a second answer, which is a 400
                self._called.add(call_id)
                function = {
                    "name": upstream_tool_name(block.name),
                    "arguments": tool_arguments(block),
                }
                calls.append({"id": call_id, "type": "function", "function": function})
            elif kind is ThinkingBlock and self._thinking_field and block.thinking:
                # Plain text back to servers that want it (protocol.md §9.10); whatever the
                # signature (Claude's, ours, or "" as Claude Code echoes unsigned thinking).
                thoughts.append(block.thinking)
            elif kind is CompactionBlock and block.content:
                texts.append(SUMMARY_HEAD + block.content)  # a summary (issue 15), as text
            elif kind in ServerArtefact:
                # Earlier hosted-tool calls (on another route) as text (issue 14).
                note = server_block_text(block)
                if note:
                    texts.append(note)
            # redacted thinking has no text; images: not allowed.
        if not texts and not calls:
            return
        # "" rather than null without text: Ollama rejects null content ("invalid message
        # content type: <nil>", pydantic-ai#5206); OpenAI accepts "" next to tool_calls
        # (corpus chat-json-tool-result-followup).
        message: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts)}
        if thoughts:
            message[self._thinking_field] = "\n\n".join(thoughts)
        if calls:
            message["tool_calls"] = calls
        self._out.append(message)
        for call in calls:
            self._answer(call["id"], i)

    def _answer(self, call_id: str, i: int) -> None:
        """The tool message for ``call_id`` (called in message ``i``), right after the call."""
        found = self._results.get(call_id)
        if found is None or found[0] <= i:
            self._out.append({"role": "tool", "tool_call_id": call_id, "content": NO_RESULT})
            return
        at, j, block = found
        output = tool_result_parts(block, f"messages.{at}.content.{j}", self._parts)
        if isinstance(output, str):
            text = output
        else:
            texts = [p["text"] for p in output if p["type"] == "text"]
            attachments = [p for p in output if p["type"] != "text"]
            text = "\n".join(texts) or ATTACHMENTS_FOLLOW
            if attachments:
                self._carry.append(
                    {"type": "text", "text": f"[attachments of tool call {call_id}]"}
                )
                self._carry.extend(attachments)
        self._out.append({"role": "tool", "tool_call_id": call_id, "content": text})
