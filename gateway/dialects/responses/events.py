"""Responses API stream events: one handler per event class, and the dispatch table.

Pure: no aiohttp, no asyncio. The handlers are the event methods of the stream state
(:class:`~.content.ResponsesContent`), kept as functions so that ``feed`` (:mod:`.stream`)
dispatches with one dict lookup (``HANDLERS[type(ev)](self, ev, out)``) and no extra call per
event; they use the translator's state and its item and block helpers directly. The table is
built, and checked to cover every event class the decoder can return, at import (design.md,
house style 6).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final, get_args

import msgspec

from ...anthropic.stop import POLICY_REFUSAL_CODES, refusal_details
from ...anthropic.stream import ARGS_LIVE, ARGS_WHOLE, DONE, IDLE, TEXT, THINK, TOOL
from ...errors import failure_error, invalid_event
from ...schemas.openai_responses import (
    FunctionCallItem,
    OutputItem,
    ReasoningItem,
    ResponseError,
    decode_item,
)
from ...schemas.openai_responses_events import (
    ErrorEvent,
    FunctionCallArgumentsDelta,
    FunctionCallArgumentsDone,
    IgnoredEvent,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    ReasoningSummaryTextDelta,
    ReasoningTextDelta,
    RefusalDelta,
    ResponseCompleted,
    ResponseFailed,
    ResponseIncomplete,
    StreamEvent,
    UnknownEvent,
)
from .content import ResponsesContent

__all__ = ["HANDLERS"]

#: The translator's logger: records keep the name they had before the handlers moved here.
_log = logging.getLogger("gateway.dialects.responses.stream")

# Reasoning text sources (a reasoning item streams one of them, §7).
_SUMMARY: Final = 0
_RAW: Final = 1

_Handler = Callable[[ResponsesContent, Any, list[bytes]], None]


# ---------------------------------------------------------------------------------------------
# Event handlers: one per event class (design.md, house style 6: exhaustive dispatch).


def _on_text_delta(self: ResponsesContent, ev: OutputTextDelta, out: list[bytes]) -> None:
    # A delta for the open text block without stop sequences takes feed_many's hot path.
    delta = ev.delta
    if not delta:
        return  # text blocks open on the first non-empty delta (§10 item 6)
    it = self._find(ev.output_index, ev.item_id)
    if it is None:
        it = self._register(TEXT, ev.output_index, ev.item_id)  # never announced
    if it.kind == TEXT and it.state != DONE:
        self._text(it, delta, out)


def _on_refusal_delta(self: ResponsesContent, ev: RefusalDelta, out: list[bytes]) -> None:
    if not ev.delta:
        return
    it = self._find(ev.output_index, ev.item_id)
    if it is None:
        it = self._register(TEXT, ev.output_index, ev.item_id)
    if it.kind == TEXT and it.state != DONE:
        self._refusal = True
        self._text(it, ev.delta, out)


def _on_args_delta(
    self: ResponsesContent, ev: FunctionCallArgumentsDelta, out: list[bytes]
) -> None:
    # Arguments streaming live into the open tool block take feed_many's hot path instead.
    if not ev.delta:
        return
    it = self._find(ev.output_index, ev.item_id)
    if it is None:
        # Arguments for a call never announced: buffer until its name is known.
        it = self._register(TOOL, ev.output_index, ev.item_id)
    if it.kind == TOOL and it.state != DONE:
        self._args(it, ev.delta, out)


def _on_args_done(self: ResponsesContent, ev: FunctionCallArgumentsDone, out: list[bytes]) -> None:
    # The arguments are complete here; output_item.done adds nothing for a function call, so
    # finishing now lets waiting items go sooner.
    it = self._find(ev.output_index, ev.item_id)
    if it is None or it.kind != TOOL or it.state == DONE:
        return
    if it.name is None or (ev.arguments is None and it.args_mode != ARGS_LIVE):
        # The name (a call never announced) or the arguments (absent here) come with
        # output_item.done; keep what this event has.
        if it.args_mode != ARGS_LIVE and ev.arguments is not None:
            it.args_raw = [ev.arguments]
            it.args_mode = ARGS_WHOLE
        return
    self._complete(it, out, FunctionCallItem(id=it.item_id, arguments=ev.arguments))


def _on_reasoning_delta(
    self: ResponsesContent,
    ev: ReasoningSummaryTextDelta | ReasoningTextDelta,
    out: list[bytes],
) -> None:
    if not self._thinking or not ev.delta:
        return
    it = self._find(ev.output_index, ev.item_id)
    if it is None:
        it = self._register(THINK, ev.output_index, ev.item_id)
    if it.kind == THINK and it.state != DONE:
        if isinstance(ev, ReasoningSummaryTextDelta):
            self._reasoning(it, _SUMMARY, ev.summary_index, ev.delta, out)
        else:
            self._reasoning(it, _RAW, ev.content_index, ev.delta, out)


def _decode_or_fail(
    self: ResponsesContent, raw: msgspec.Raw, out: list[bytes]
) -> OutputItem | None:
    try:
        return decode_item(raw)
    except msgspec.DecodeError as exc:
        self._fail(invalid_event("output item", str(exc)), out)
        return None


def _on_item_added(self: ResponsesContent, ev: OutputItemAdded, out: list[bytes]) -> None:
    item = _decode_or_fail(self, ev.item, out)
    if item is None or (isinstance(item, ReasoningItem) and not self._thinking):
        return  # hosted-tool items, or reasoning with thinking off: ignored (§6)
    it = self._item_for(item, ev.output_index)
    if it.kind == TOOL and it.state == IDLE and not it.finished and it.name is not None:
        # Start the tool_use block at once, so the client sees the tool name early.
        if self._claim(it, out):
            self._open_block(it, out)
        elif not self.done:
            self._wait(it)


def _on_item_done(self: ResponsesContent, ev: OutputItemDone, out: list[bytes]) -> None:
    item = _decode_or_fail(self, ev.item, out)
    if item is None or (isinstance(item, ReasoningItem) and not self._thinking):
        return
    self._complete(self._item_for(item, ev.output_index), out, item)


def _on_completed(
    self: ResponsesContent, ev: ResponseCompleted | ResponseIncomplete, out: list[bytes]
) -> None:
    self._terminal(ev.response, out)


def _on_failed(self: ResponsesContent, ev: ResponseFailed, out: list[bytes]) -> None:
    error = ev.response.error
    if error is not None and error.code in POLICY_REFUSAL_CODES:
        self._refusal = True
        self._stop_details = refusal_details(error.code, error.message)
        self._terminal(ev.response, out)
        return
    self._fail(failure_error(error), out)


def _on_error(self: ResponsesContent, ev: ErrorEvent, out: list[bytes]) -> None:
    # Flat {code, message} (openai SDK type) or nested {"error": {type, code, message}}.
    nested = ev.error
    if nested is not None:
        code = nested.code if nested.code is not None else nested.type
        message = nested.message if nested.message is not None else ev.message
    else:
        code, message = ev.code, ev.message
    self._fail(failure_error(ResponseError(code=code, message=message)), out)


def _on_ignored(self: ResponsesContent, ev: IgnoredEvent, out: list[bytes]) -> None:
    """Known events that carry nothing we need (lifecycle, part boundaries, ``.done``
    repeats of text already streamed, annotations)."""


def _on_unhandled(self: ResponsesContent, ev: UnknownEvent, out: list[bytes]) -> None:
    """UnknownEvent (hosted tools, future events): ignored on purpose, counted."""
    self.ignored_events += 1
    # The type name only: never event contents (design.md, house style 11).
    _log.debug("ignored upstream event type %.100s", ev.type)


def _build_handlers() -> dict[type, _Handler]:
    handlers: dict[type, _Handler] = {
        OutputTextDelta: _on_text_delta,
        RefusalDelta: _on_refusal_delta,
        FunctionCallArgumentsDelta: _on_args_delta,
        FunctionCallArgumentsDone: _on_args_done,
        ReasoningSummaryTextDelta: _on_reasoning_delta,
        ReasoningTextDelta: _on_reasoning_delta,
        OutputItemAdded: _on_item_added,
        OutputItemDone: _on_item_done,
        ResponseCompleted: _on_completed,
        ResponseIncomplete: _on_completed,
        ResponseFailed: _on_failed,
        ErrorEvent: _on_error,
        UnknownEvent: _on_unhandled,
    }
    for cls in get_args(StreamEvent):
        if issubclass(cls, IgnoredEvent):
            handlers[cls] = _on_ignored
    # Exhaustive by construction: every event class the decoder can return has a handler.
    missing = [c.__name__ for c in get_args(StreamEvent) if c not in handlers]
    if missing:
        raise RuntimeError(f"stream events without a handler: {missing}")
    return handlers


HANDLERS: Final = _build_handlers()
