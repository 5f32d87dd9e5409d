"""OpenAI Responses API wire types we read: the response object and its output items.

protocol.md §6 (the stream events are in :mod:`.openai_responses_events`); field shapes checked
against the real recordings in ``shared/corpus/responses-*.json``.

* Only the fields the gateway uses are declared; msgspec skips the rest (echoed config,
  ``logprobs``, ``obfuscation``, ``sequence_number`` …), which is also what keeps decoding cheap.
* Almost every field has a default: compat servers omit fields OpenAI always sends
  (``sequence_number`` is absent before mid-2025, INDEX.md fact 11).
* Stream events are one tagged union on ``type``; output items are another. Both must
  tolerate types we do not know (hosted tools, future events):
  :func:`~.openai_responses_events.decode_refused` returns :class:`UnknownEvent` and
  :func:`decode_item` returns ``None`` for them, so callers ignore them on purpose instead of
  failing.
* Output items inside events and responses are kept as ``msgspec.Raw`` and decoded on demand
  with :func:`decode_item`: the stream hot path never pays for the full ``output`` list that
  ``response.completed`` repeats.
"""

from __future__ import annotations

from typing import Final

import msgspec
from msgspec import Raw, Struct

from ..encoding import utf8_replaced

__all__ = [
    "HEAD_DECODER",
    "RESPONSE_DECODER",
    "Annotation",
    "CodeInterpreterCallItem",
    "ContentPart",
    "FunctionCallItem",
    "HostedItem",
    "IncompleteDetails",
    "McpCallItem",
    "MessageItem",
    "OutputItem",
    "ReasoningItem",
    "Response",
    "ResponseError",
    "ResponseUsage",
    "WebSearchCallItem",
    "decode_item",
]

# ---------------------------------------------------------------------------------------------
# Response object (§6)


class ContentPart(Struct, kw_only=True, gc=False):
    """A part of a message item or reasoning item, typed by its ``type`` string.

    One flat struct for ``output_text`` / ``refusal`` (message content) and ``summary_text`` /
    ``reasoning_text`` (reasoning): unknown part types decode too and are skipped by type.
    """

    type: str = ""
    text: str | None = None
    refusal: str | None = None
    #: ``url_citation`` and other annotations of an output_text part (hosted search)
    annotations: list[Annotation] | None = None


class Annotation(Struct, kw_only=True, gc=False):
    """An output_text annotation; only ``url_citation`` is translated (issue 14)."""

    type: str = ""
    start_index: int = 0
    end_index: int = 0
    url: str | None = None
    title: str | None = None


class _Item(Struct, tag_field="type", kw_only=True):
    pass


class MessageItem(_Item, tag="message"):
    id: str | None = None
    status: str | None = None
    content: list[ContentPart] | None = None


class FunctionCallItem(_Item, tag="function_call"):
    id: str | None = None
    status: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None


class ReasoningItem(_Item, tag="reasoning"):
    id: str | None = None
    status: str | None = None
    summary: list[ContentPart] | None = None
    # vLLM / gpt-oss put raw reasoning here as reasoning_text parts (§7).
    content: list[ContentPart] | None = None
    # Take it from output_item.done or the final response, never from .added: the three
    # copies differ (INDEX.md fact 13, responses-stream-reasoning-function-call).
    encrypted_content: str | None = None


class WebSource(Struct, kw_only=True, gc=False):
    type: str = ""
    url: str | None = None
    title: str | None = None


class WebSearchAction(Struct, kw_only=True, gc=False):
    """``search`` (query, sources with include ``web_search_call.action.sources``),
    ``open_page`` or ``find_in_page``."""

    type: str = ""
    query: str | None = None
    queries: list[str] | None = None
    sources: list[WebSource] | None = None
    url: str | None = None


class WebSearchCallItem(_Item, tag="web_search_call"):
    id: str | None = None
    status: str | None = None
    action: WebSearchAction | None = None


class CodeOutput(Struct, kw_only=True, gc=False):
    type: str = ""
    logs: str | None = None
    url: str | None = None


class CodeInterpreterCallItem(_Item, tag="code_interpreter_call"):
    id: str | None = None
    status: str | None = None
    code: str | None = None
    outputs: list[CodeOutput] | None = None
    container_id: str | None = None


class McpError(Struct, kw_only=True, gc=False):
    type: str | None = None
    message: str | None = None


class McpCallItem(_Item, tag="mcp_call"):
    id: str | None = None
    status: str | None = None
    name: str | None = None
    server_label: str | None = None
    arguments: str | None = None
    output: str | None = None
    error: McpError | str | None = None


class CompactionItem(_Item, tag="compaction"):
    """The upstream's compaction of the conversation so far (issue 15 item 4): opaque."""

    id: str | None = None
    encrypted_content: str | None = None


#: Items of the hosted tools the gateway asks for (issue 14), and compaction (issue 15);
#: ``mcp_list_tools`` and other hosted items stay unknown and are skipped.
HostedItem = WebSearchCallItem | CodeInterpreterCallItem | McpCallItem | CompactionItem
OutputItem = MessageItem | FunctionCallItem | ReasoningItem | HostedItem


class InputTokensDetails(Struct, kw_only=True, gc=False):
    cached_tokens: int | None = None
    # 2026 bodies only (responses-json-incomplete-max-output-tokens).
    cache_write_tokens: int | None = None


class OutputTokensDetails(Struct, kw_only=True, gc=False):
    reasoning_tokens: int | None = None


class ResponseUsage(Struct, kw_only=True, gc=False):
    """``input_tokens`` includes cached reads (§6); common.usage_from_responses splits them."""

    input_tokens: int | None = None
    input_tokens_details: InputTokensDetails | None = None
    output_tokens: int | None = None
    output_tokens_details: OutputTokensDetails | None = None
    total_tokens: int | None = None


class ResponseError(Struct, kw_only=True, gc=False):
    code: str | int | None = None
    message: str | None = None
    type: str | None = None


class IncompleteDetails(Struct, kw_only=True, gc=False):
    reason: str | None = None


class Response(Struct, kw_only=True):
    """The Responses ``response`` object (non-streaming body; payload of terminal events)."""

    id: str | None = None
    status: str | None = None
    model: str | None = None
    # Null is allowed: the openai SDK notes the final output may be null (§7).
    output: list[Raw] | None = None
    usage: ResponseUsage | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    #: the tier that served the request (``default``, ``priority``, ``flex`` …)
    service_tier: str | None = None


RESPONSE_DECODER: Final = msgspec.json.Decoder(Response)
_ITEM_DECODER: Final[msgspec.json.Decoder[OutputItem]] = msgspec.json.Decoder(OutputItem)


class _Head(Struct, gc=False):
    """Just the ``type`` of an event or item (everything else skipped)."""

    type: str


HEAD_DECODER: Final = msgspec.json.Decoder(_Head)
_ITEM_TYPES: Final = frozenset(
    {
        "message",
        "function_call",
        "reasoning",
        "web_search_call",
        "code_interpreter_call",
        "mcp_call",
        "compaction",
    }
)


def decode_item(raw: Raw | bytes | str) -> OutputItem | None:
    """Decode one output item; ``None`` for an item type we do not translate.

    The hosted-tool items the gateway maps (``web_search_call``, ``code_interpreter_call``,
    ``mcp_call``) decode; other hosted items (``mcp_list_tools``, ``file_search_call`` …) are
    ignored (§6). Bytes that are not UTF-8 are read with U+FFFD in their place (a stream's
    event data reaches here undecoded, and the SSE standard decodes with replacement).
    Raises ``msgspec.DecodeError`` (or its subclass ``ValidationError``) for malformed JSON
    or a known item with wrong field types.
    """
    try:
        return _ITEM_DECODER.decode(raw)
    except msgspec.ValidationError:
        head = HEAD_DECODER.decode(raw)
        if head.type in _ITEM_TYPES:
            raise
        return None
    except msgspec.DecodeError:
        repaired = None if isinstance(raw, str) else utf8_replaced(bytes(raw))
        if repaired is None:
            raise
        return decode_item(repaired)
