"""OpenAI Responses API stream events (protocol.md §7): one tagged union on ``type``.

Field shapes are checked against the real recordings in ``shared/corpus/responses-stream-*.json``.
Events the gateway does not use are :class:`IgnoredEvent` (decoded, then dropped on purpose);
types it does not know at all decode to :class:`UnknownEvent` (:func:`decode_refused`), so a new
event never fails a stream. The response object and its output items are in
:mod:`.openai_responses`.
"""

from __future__ import annotations

from typing import Final

import msgspec
from msgspec import Raw, Struct

from .openai_responses import HEAD_DECODER, Response

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


#: The hot path's decoder (the stream translator's loop): a known event, or it raises; what
#: it refuses goes to :func:`decode_refused`.
decode_known: Final = _EVENT_DECODER.decode


def decode_refused(data: str | bytes, exc: msgspec.DecodeError) -> UnknownEvent:
    """After ``decode_known(data)`` raised ``exc``: :class:`UnknownEvent` for a well-formed
    event of a type we do not know (hosted tools, future events), else ``exc`` again (malformed
    JSON, a payload without a string ``type``, or a known event whose fields have the wrong
    types: ``msgspec.ValidationError``, a subclass, carrying the JSON path)."""
    if isinstance(exc, msgspec.ValidationError):
        head = HEAD_DECODER.decode(data)
        if head.type not in EVENT_TYPES:
            return UnknownEvent(head.type)
    raise exc


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
