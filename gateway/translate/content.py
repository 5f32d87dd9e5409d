"""Dialect-neutral request helpers shared by the Responses and the Chat Completions translators.

Pure: imports neither aiohttp nor asyncio. Used by ``to_responses`` and ``to_chat``:
everything that reads the Anthropic request and answers a question both upstream dialects ask
the same way: the system text without Claude Code's billing header, the effort a request
reasons with, which tool choice it makes, how a tool's input, a search result or a tool
reference reads as text, and how images and documents become content parts. The parts
themselves are dialect-specific, so they are built through a :class:`PartMaker` (protocol.md
§9.4: ``input_image`` / ``input_file`` for Responses, ``image_url`` / ``file`` for Chat
Completions). The Anthropic frames the stream translators write are in :mod:`.frames`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import msgspec
import orjson

from ..errors import InvalidRequestError
from ..schemas.anthropic import (
    Base64Source,
    ContentSource,
    DocumentBlock,
    FileSource,
    ImageBlock,
    Message,
    MessagesRequest,
    SearchResultBlock,
    TextBlock,
    TextSource,
    ToolChoiceAny,
    ToolChoiceAuto,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolReferenceBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from ..settings import Route
from .tool_schema import upstream_tool_name

__all__ = [
    "BILLING_HEADER_PREFIX",
    "EMPTY_OUTPUT",
    "NO_RESULT",
    "TOOL_ERROR_PREFIX",
    "PartMaker",
    "ToolChoicePlan",
    "document_parts",
    "image_url",
    "is_custom_tool",
    "output_schema",
    "search_result_text",
    "session_id_from",
    "sha_hex",
    "system_message_texts",
    "system_text",
    "thinking_effort",
    "tool_arguments",
    "tool_choice_plan",
    "tool_name_map",
    "tool_reference_text",
    "tool_result_parts",
]

#: Claude Code's first system block; its suffix changes every request (claude-code.md §3), so
#: forwarding it would defeat the upstream prefix cache.
BILLING_HEADER_PREFIX: Final = "x-anthropic-billing-header:"
#: Tool-output placeholders (protocol.md §9.2, §9.5): OpenAI needs an output for every call
#: and an empty one is not known to be accepted.
EMPTY_OUTPUT: Final = "(empty)"
NO_RESULT: Final = "(no result)"
#: Neither dialect has an error flag on tool outputs (protocol.md §9.5): a GW convention.
TOOL_ERROR_PREFIX: Final = "[tool error] "


# ---------------------------------------------------------------------------------------------
# Identity


def sha_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def session_id_from(req: MessagesRequest, header_value: str | None) -> str | None:
    """The client's conversation id, used to bucket the upstream prompt cache.

    The ``X-Claude-Code-Session-Id`` header when present; else ``metadata.user_id``, which
    Claude Code sends as a JSON *string* ``{"device_id":…,"account_uuid":"","session_id":…}``
    (claude-code.md §3) and whose ``session_id`` is then used; else the raw ``user_id``; else
    None.
    """
    if header_value:
        return header_value
    user_id = req.metadata.user_id if req.metadata is not None else None
    if not user_id:
        return None
    if user_id.startswith("{"):
        try:
            doc = orjson.loads(user_id)
        except orjson.JSONDecodeError:
            return user_id
        if isinstance(doc, dict):
            sid = doc.get("session_id")
            if isinstance(sid, str) and sid:
                return sid
    return user_id


# ---------------------------------------------------------------------------------------------
# System text and effort


def system_text(system: str | list[TextBlock] | None) -> str | None:
    """The top-level ``system`` as one string (blocks joined by a blank line), billing header
    dropped; None when nothing is left."""
    if system is None or isinstance(system, str):
        return system or None
    texts = [b.text for b in system if b.text and not b.text.startswith(BILLING_HEADER_PREFIX)]
    return "\n\n".join(texts) or None


def system_message_texts(msg: Message) -> list[str]:
    """The non-empty texts of a mid-conversation ``role: "system"`` message (claude-code.md §3:
    a string, a list of text blocks, or ``[]`` carrying only ``output_config``)."""
    content = msg.content
    if isinstance(content, str):
        return [content] if content else []
    return [b.text for b in content if type(b) is TextBlock and b.text]


def _message_effort(messages: list[Message]) -> str | None:
    """The effort of the last ``role: "system"`` message that carries one (claude-code.md §3:
    Claude Code's per-turn ``output_config``); it overrides the top-level effort."""
    for msg in reversed(messages):
        config = msg.output_config
        if msg.role == "system" and config is not None and config.effort is not None:
            return config.effort
    return None


def _budget_effort(budget: int) -> str:
    # protocol.md §9.10: the gateway's bucketing of Anthropic thinking budgets.
    if budget < 4096:
        return "low"
    if budget < 16384:
        return "medium"
    return "high"


def thinking_effort(req: MessagesRequest, route: Route) -> tuple[bool, str | None]:
    """``(reason, effort)``: whether the request reasons upstream, and with which effort.

    protocol.md §9.10: an explicit effort (a system message's, else ``output_config.effort``)
    wins; ``enabled`` budgets are bucketed; ``adaptive`` uses the explicit effort or the
    route's default (or none: ``(True, None)``); ``disabled`` / no thinking reason only when an
    effort is given; unknown thinking types (``between_tools`` …) do not reason. Routes whose
    model takes no reasoning parameters never reason: ``(False, None)``.
    """
    if not route.reasoning:
        return False, None
    explicit = _message_effort(req.messages)
    if explicit is None and req.output_config is not None:
        explicit = req.output_config.effort
    thinking = req.thinking
    kind = thinking.type if thinking is not None else "disabled"
    if thinking is not None and kind == "enabled":
        # A budget-less ``enabled`` (malformed, but seen from older clients) uses the default.
        if explicit is not None:
            return True, explicit
        if thinking.budget_tokens is not None:
            return True, _budget_effort(thinking.budget_tokens)
        return True, route.default_effort
    if kind == "adaptive":
        return True, explicit if explicit is not None else route.default_effort
    if kind == "disabled" and explicit is not None:
        return True, explicit
    return False, None


def output_schema(req: MessagesRequest) -> dict[str, Any] | None:
    """The JSON schema of ``output_config.format`` when it is ``json_schema``, else None
    (protocol.md §9.1); a json_schema format without a schema is a 400."""
    fmt = req.output_config.format if req.output_config is not None else None
    if fmt is None or fmt.type != "json_schema":
        return None
    if fmt.schema is None:
        raise InvalidRequestError("output_config.format.schema: required for json_schema")
    return fmt.schema


# ---------------------------------------------------------------------------------------------
# Tools


def is_custom_tool(kind: str | None, schema: dict[str, Any] | None) -> bool:
    """Server tools have a versioned type and no input_schema (protocol.md §1.4)."""
    return (kind is None or kind == "custom") and schema is not None


def tool_name_map(req: MessagesRequest) -> dict[str, str]:
    """Upstream tool name → client tool name, for the offered tools whose name was changed.

    Empty for nearly every request (names already match ``^[a-zA-Z0-9_-]{1,64}$``); the
    response side uses it to give ``tool_use.name`` back in the client's spelling.
    """
    out: dict[str, str] = {}
    for tool in req.tools or ():
        if is_custom_tool(tool.type, tool.input_schema):
            upstream = upstream_tool_name(tool.name)
            if upstream != tool.name:
                out[upstream] = tool.name
    return out


@dataclass(frozen=True, slots=True)
class ToolChoicePlan:
    """The upstream tool choice, dialect-neutral: ``mode`` is what both APIs call
    ``"auto"`` / ``"required"`` / ``"none"``, or ``"function"`` forcing ``name`` (the upstream
    spelling); ``no_parallel`` asks for ``parallel_tool_calls: false``."""

    mode: Literal["auto", "required", "none", "function"]
    name: str | None = None
    no_parallel: bool = False


def tool_choice_plan(req: MessagesRequest, *, forwarded: bool) -> ToolChoicePlan | None:
    """protocol.md §9.1. None: send no ``tool_choice``. ``forwarded``: at least one tool is
    sent upstream. Call it whenever the request has tools, even if none is forwarded.

    Raises when the choice forces a tool that is not forwarded (a server tool, or a name the
    request does not define): dropping it would change what the client asked for (§10.16).
    """
    choice = req.tool_choice
    if choice is None:
        return None
    if isinstance(choice, ToolChoiceTool):
        names = {t.name for t in req.tools or () if is_custom_tool(t.type, t.input_schema)}
        if choice.name not in names:
            raise InvalidRequestError(
                f"tool_choice.name: {choice.name!r} is not a custom tool of this request "
                "(server tools are not forwarded upstream)"
            )
        return ToolChoicePlan(
            "function",
            upstream_tool_name(choice.name),
            no_parallel=bool(choice.disable_parallel_tool_use),
        )
    if isinstance(choice, ToolChoiceAny):
        if not forwarded:
            raise InvalidRequestError(
                "tool_choice.type: 'any' needs a tool, but this request has only server "
                "tools, which are not forwarded upstream"
            )
        return ToolChoicePlan("required", no_parallel=bool(choice.disable_parallel_tool_use))
    if not forwarded:
        return None
    if isinstance(choice, ToolChoiceAuto):
        return ToolChoicePlan("auto", no_parallel=bool(choice.disable_parallel_tool_use))
    assert isinstance(choice, ToolChoiceNone)
    return ToolChoicePlan("none")


def tool_arguments(block: ToolUseBlock) -> str:
    """``tool_use.input`` as compact JSON text (``"{}"`` when absent)."""
    if block.input is None:
        return "{}"
    try:
        return orjson.dumps(block.input).decode()
    except TypeError:  # orjson refuses integers wider than 64 bits; msgspec does not
        return msgspec.json.encode(block.input).decode()


def search_result_text(block: SearchResultBlock) -> str:
    return "\n".join(
        [s for s in (block.title, block.source) if s] + [t.text for t in block.content if t.text]
    )


def tool_reference_text(block: ToolReferenceBlock) -> str:
    # Claude Code's tool search (claude-code.md §3): the named tool is already in ``tools``.
    return f"Tool loaded: {block.tool_name}"


# ---------------------------------------------------------------------------------------------
# Content parts


class PartMaker(Protocol):
    """Builds one dialect's content parts (protocol.md §9.4). ``text_type`` is the ``type``
    of its text parts; only text parts carry that type."""

    @property
    def text_type(self) -> str: ...

    def text(self, text: str) -> dict[str, Any]: ...

    def image(self, block: ImageBlock, path: str) -> dict[str, Any]:
        """An image part; may raise InvalidRequestError naming ``path``."""
        ...

    def pdf(self, filename: str, data_url: str) -> dict[str, Any]: ...

    def pdf_url(self, url: str, path: str) -> dict[str, Any]:
        """A PDF by URL; may raise InvalidRequestError naming ``path``."""
        ...


def image_url(block: ImageBlock, path: str) -> str:
    """The URL of an image part: a ``data:`` URL for base64 sources (protocol.md §9.4).
    Anthropic file ids mean nothing upstream, so they are a 400."""
    src = block.source
    if isinstance(src, Base64Source):
        return f"data:{src.media_type};base64,{src.data}"
    if isinstance(src, URLSource):
        return src.url
    raise InvalidRequestError(f"{path}.source: file_id sources are not supported")


def document_parts(block: DocumentBlock, path: str, parts: PartMaker) -> list[dict[str, Any]]:
    """protocol.md §9.4: PDFs as file parts, text and content sources inline (title and
    context first)."""
    src = block.source
    header = [s for s in (block.title, block.context) if s]
    if isinstance(src, Base64Source):
        if src.media_type != "application/pdf":
            # Anthropic accepts base64 documents only as PDF; anything else is malformed.
            raise InvalidRequestError(
                f"{path}.source.media_type: base64 documents must be application/pdf, "
                f"got {src.media_type!r}"
            )
        name = block.title or "document"
        if not name.lower().endswith(".pdf"):
            name += ".pdf"
        return [parts.pdf(name, f"data:application/pdf;base64,{src.data}")]
    if isinstance(src, URLSource):
        return [parts.pdf_url(src.url, path)]
    if isinstance(src, TextSource):
        return [parts.text("\n".join([*header, src.data]))]
    if isinstance(src, ContentSource):
        if isinstance(src.content, str):
            return [parts.text("\n".join([*header, src.content]))]
        out: list[dict[str, Any]] = []
        if header:
            out.append(parts.text("\n".join(header)))
        for k, inner in enumerate(src.content):
            if isinstance(inner, TextBlock):
                if inner.text:
                    out.append(parts.text(inner.text))
            else:
                out.append(parts.image(inner, f"{path}.source.content.{k}"))
        return out
    assert isinstance(src, FileSource)
    raise InvalidRequestError(f"{path}.source: file_id sources are not supported")


def tool_result_parts(
    block: ToolResultBlock, path: str, parts: PartMaker
) -> str | list[dict[str, Any]]:
    """A tool_result's content as one string or a part list (protocol.md §9.5).

    A string for string content and for lists of text-like blocks (joined by newlines); a
    list of parts when images or documents are present; ``"(empty)"`` for nothing. No error
    flag exists upstream, so ``is_error`` becomes a ``"[tool error] "`` prefix (on the first
    text part, or as a text part of its own when the list starts with something else).
    """
    content = block.content
    output: str | list[dict[str, Any]]
    if content is None or isinstance(content, str):
        output = content or EMPTY_OUTPUT
    elif all(isinstance(c, TextBlock | ToolReferenceBlock | SearchResultBlock) for c in content):
        texts: list[str] = []
        for c in content:
            if isinstance(c, TextBlock):
                text = c.text
            elif isinstance(c, ToolReferenceBlock):
                text = tool_reference_text(c)
            else:
                assert isinstance(c, SearchResultBlock)
                text = search_result_text(c)
            if text:
                texts.append(text)
        output = "\n".join(texts) or EMPTY_OUTPUT
    else:
        out: list[dict[str, Any]] = []
        for k, c in enumerate(content):
            if isinstance(c, TextBlock):
                if c.text:
                    out.append(parts.text(c.text))
            elif isinstance(c, ImageBlock):
                out.append(parts.image(c, f"{path}.content.{k}"))
            elif isinstance(c, DocumentBlock):
                out.extend(document_parts(c, f"{path}.content.{k}", parts))
            elif isinstance(c, ToolReferenceBlock):
                out.append(parts.text(tool_reference_text(c)))
            else:
                out.append(parts.text(search_result_text(c)))
        output = out or EMPTY_OUTPUT
    if block.is_error:
        if isinstance(output, str):
            output = TOOL_ERROR_PREFIX + output
        elif output and output[0]["type"] == parts.text_type:
            output[0] = parts.text(TOOL_ERROR_PREFIX + output[0]["text"])
        else:
            output.insert(0, parts.text(TOOL_ERROR_PREFIX.rstrip()))
    return output
