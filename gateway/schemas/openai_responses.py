"""OpenAI Responses API wire types we read: the response object and its stream events.

protocol.md §6 (response object) and §7 (stream events); field shapes checked against the real
recordings in ``shared/corpus/responses-*.json``.

* Only the fields the gateway uses are declared; msgspec skips the rest (echoed config,
  ``logprobs``, ``obfuscation``, ``sequence_number`` …), which is also what keeps decoding cheap.
* Almost every field has a default: compat servers omit fields OpenAI always sends
  (``sequence_number`` is absent before mid-2025, INDEX.md fact 11).
* Stream events are one tagged union on ``type``; output items are another. Both must
  tolerate types we do not know (hosted tools, future events): :func:`decode_event` returns
  :class:`UnknownEvent` and :func:`decode_item` returns ``None`` for them, so callers ignore
  them on purpose instead of failing.
* Output items inside events and responses are kept as ``msgspec.Raw`` and decoded on demand
  with :func:`decode_item`: the stream hot path never pays for the full ``output`` list that
  ``response.completed`` repeats.
"""

from __future__ import annotations

from typing import Final

import msgspec
from msgspec import Raw, Struct

__all__ = [
    "EVENT_TYPES",
    "RESPONSE_DECODER",
    "ContentPart",
    "ErrorDetail",
    "ErrorEvent",
    "FunctionCallArgumentsDelta",
    "FunctionCallArgumentsDone",
    "FunctionCallItem",
    "IgnoredEvent",
    "IncompleteDetails",
    "MessageItem",
    "OutputItem",
    "OutputItemAdded",
    "OutputItemDone",
    "OutputTextDelta",
    "ReasoningItem",
    "ReasoningSummaryTextDelta",
    "ReasoningTextDelta",
    "RefusalDelta",
    "Response",
    "ResponseCompleted",
    "ResponseError",
    "ResponseFailed",
    "ResponseIncomplete",
    "ResponseUsage",
    "StreamEvent",
    "UnknownEvent",
    "decode_event",
    "decode_item",
    "decode_untyped_error",
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


OutputItem = MessageItem | FunctionCallItem | ReasoningItem


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


RESPONSE_DECODER: Final = msgspec.json.Decoder(Response)
_ITEM_DECODER: Final[msgspec.json.Decoder[OutputItem]] = msgspec.json.Decoder(OutputItem)


class _Head(Struct, gc=False):
    """Just the ``type`` of an event or item (everything else skipped)."""

    type: str


_HEAD_DECODER: Final = msgspec.json.Decoder(_Head)
_ITEM_TYPES: Final = frozenset({"message", "function_call", "reasoning"})


def decode_item(raw: Raw | bytes | str) -> OutputItem | None:
    """Decode one output item; ``None`` for an item type we do not translate.

    Hosted-tool items (``web_search_call`` …, responses-stream-web-search-annotations) are not
    requested by the gateway and are ignored (§6). Raises ``msgspec.DecodeError`` (or its
    subclass ``ValidationError``) for malformed JSON or a known item with wrong field types.
    """
    try:
        return _ITEM_DECODER.decode(raw)
    except msgspec.ValidationError:
        head = _HEAD_DECODER.decode(raw)
        if head.type in _ITEM_TYPES:
            raise
        return None


# ---------------------------------------------------------------------------------------------
# Stream events (§7)


class _Event(Struct, tag_field="type", kw_only=True, gc=False):
    pass


class IgnoredEvent(_Event):
    """Base of known events the translator deliberately does nothing with."""


class ResponseCreated(IgnoredEvent, tag="response.created"):
    pass


class ResponseInProgress(IgnoredEvent, tag="response.in_progress"):
    pass


class ResponseQueued(IgnoredEvent, tag="response.queued"):
    # Background mode (responses-stream-background-queued).
    pass


class ContentPartAdded(IgnoredEvent, tag="response.content_part.added"):
    pass


class ContentPartDone(IgnoredEvent, tag="response.content_part.done"):
    pass


class OutputTextDone(IgnoredEvent, tag="response.output_text.done"):
    pass


class OutputTextAnnotationAdded(IgnoredEvent, tag="response.output_text.annotation.added"):
    # url_citation annotations: dropped (protocol.md §9.3).
    pass


class RefusalDone(IgnoredEvent, tag="response.refusal.done"):
    pass


class ReasoningSummaryPartAdded(IgnoredEvent, tag="response.reasoning_summary_part.added"):
    pass


class ReasoningSummaryPartDone(IgnoredEvent, tag="response.reasoning_summary_part.done"):
    pass


class ReasoningSummaryTextDone(IgnoredEvent, tag="response.reasoning_summary_text.done"):
    pass


class ReasoningTextDone(IgnoredEvent, tag="response.reasoning_text.done"):
    pass


class OutputItemAdded(_Event, tag="response.output_item.added"):
    item: Raw
    output_index: int = -1


class OutputItemDone(_Event, tag="response.output_item.done"):
    item: Raw
    output_index: int = -1


class OutputTextDelta(_Event, tag="response.output_text.delta"):
    item_id: str = ""
    output_index: int = -1
    content_index: int = 0
    delta: str = ""


class RefusalDelta(_Event, tag="response.refusal.delta"):
    item_id: str = ""
    output_index: int = -1
    content_index: int = 0
    delta: str = ""


class FunctionCallArgumentsDelta(_Event, tag="response.function_call_arguments.delta"):
    item_id: str = ""
    output_index: int = -1
    delta: str = ""


class FunctionCallArgumentsDone(_Event, tag="response.function_call_arguments.done"):
    item_id: str = ""
    output_index: int = -1
    arguments: str | None = None


class ReasoningSummaryTextDelta(_Event, tag="response.reasoning_summary_text.delta"):
    item_id: str = ""
    output_index: int = -1
    summary_index: int = 0
    delta: str = ""


class ReasoningTextDelta(_Event, tag="response.reasoning_text.delta"):
    item_id: str = ""
    output_index: int = -1
    content_index: int = 0
    delta: str = ""


class ResponseCompleted(_Event, tag="response.completed"):
    response: Response = msgspec.field(default_factory=Response)


class ResponseIncomplete(_Event, tag="response.incomplete"):
    response: Response = msgspec.field(default_factory=Response)


class ResponseFailed(_Event, tag="response.failed"):
    response: Response = msgspec.field(default_factory=Response)


class ErrorDetail(Struct, kw_only=True, gc=False):
    type: str | None = None
    code: str | int | None = None
    message: str | None = None


class ErrorEvent(_Event, tag="error"):
    """Both shapes: flat ``{code, message, param}`` (openai SDK type) and nested
    ``{"error": {type, code, message}}`` (some compat servers), protocol.md §7."""

    code: str | int | None = None
    message: str | None = None
    error: ErrorDetail | None = None


class UnknownEvent(Struct, gc=False):
    """An event whose ``type`` we do not know; decoded only far enough to be ignored."""

    type: str


_KNOWN = (
    ResponseCreated,
    ResponseInProgress,
    ResponseQueued,
    ContentPartAdded,
    ContentPartDone,
    OutputTextDone,
    OutputTextAnnotationAdded,
    RefusalDone,
    ReasoningSummaryPartAdded,
    ReasoningSummaryPartDone,
    ReasoningSummaryTextDone,
    ReasoningTextDone,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    RefusalDelta,
    FunctionCallArgumentsDelta,
    FunctionCallArgumentsDone,
    ReasoningSummaryTextDelta,
    ReasoningTextDelta,
    ResponseCompleted,
    ResponseIncomplete,
    ResponseFailed,
    ErrorEvent,
)

StreamEvent = (
    ResponseCreated
    | ResponseInProgress
    | ResponseQueued
    | ContentPartAdded
    | ContentPartDone
    | OutputTextDone
    | OutputTextAnnotationAdded
    | RefusalDone
    | ReasoningSummaryPartAdded
    | ReasoningSummaryPartDone
    | ReasoningSummaryTextDone
    | ReasoningTextDone
    | OutputItemAdded
    | OutputItemDone
    | OutputTextDelta
    | RefusalDelta
    | FunctionCallArgumentsDelta
    | FunctionCallArgumentsDone
    | ReasoningSummaryTextDelta
    | ReasoningTextDelta
    | ResponseCompleted
    | ResponseIncomplete
    | ResponseFailed
    | ErrorEvent
)

EVENT_TYPES: Final[frozenset[str]] = frozenset(str(cls.__struct_config__.tag) for cls in _KNOWN)
_EVENT_DECODER: Final[msgspec.json.Decoder[StreamEvent]] = msgspec.json.Decoder(StreamEvent)


def decode_event(data: str | bytes) -> StreamEvent | UnknownEvent:
    """Decode one upstream event's ``data``; dispatch is on the JSON ``type`` (§7).

    Returns :class:`UnknownEvent` for a well-formed event of a type we do not know (hosted
    tools, future events). Raises ``msgspec.DecodeError`` for malformed JSON, a payload without
    a string ``type``, or a known event whose fields have the wrong types
    (``msgspec.ValidationError``, a subclass, carrying the JSON path).
    """
    try:
        return _EVENT_DECODER.decode(data)
    except msgspec.ValidationError:
        head = _HEAD_DECODER.decode(data)
        if head.type in EVENT_TYPES:
            raise
        return UnknownEvent(head.type)


class _UntypedError(Struct, kw_only=True, gc=False):
    error: ErrorDetail | None = None


_UNTYPED_ERROR_DECODER: Final = msgspec.json.Decoder(_UntypedError)


def decode_untyped_error(data: str | bytes) -> ErrorEvent | None:
    """``{"error": {…}}`` without a ``type`` (the Chat Completions error-chunk shape, §8, which
    some compat servers also send on Responses streams) as an :class:`ErrorEvent`; ``None``
    when ``data`` is anything else."""
    try:
        doc = _UNTYPED_ERROR_DECODER.decode(data)
    except msgspec.DecodeError:
        return None
    if doc.error is None:
        return None
    return ErrorEvent(error=doc.error)
