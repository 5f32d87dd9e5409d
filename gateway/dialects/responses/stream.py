"""Responses API stream events → Anthropic Messages SSE frames (one state machine class).

Pure: no aiohttp, no asyncio (design.md, house style 1-3). The relay feeds the upstream
:class:`~gateway.sse.SSEEvent` values of each read to ``feed_many`` and writes the returned
frames; ``finish()`` at upstream EOF, ``fail(err)`` on a transport failure. Each event's data
is decoded and dispatched through the handler table (:mod:`.events`) to the item content
(:mod:`.content`) and state (:mod:`.items`).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import orjson

from ...anthropic.frames import DELTA_END
from ...encoding import utf8_replaced
from ...errors import invalid_event
from ...schemas.openai_responses_events import (
    StreamEvent,
    UnknownEvent,
    decode_known,
    decode_refused,
    decode_untyped_error,
)
from ...sse import SSEEvent
from .content import ResponsesContent
from .events import HANDLERS

__all__ = ["ResponsesStreamTranslator"]


class ResponsesStreamTranslator(ResponsesContent):
    """Translate one Responses stream into Anthropic SSE frames.

    Contract: :class:`~gateway.anthropic.stream.BaseStreamTranslator`'s, and:

    * ``finish()`` at upstream EOF: an error frame (``api_error``) unless a terminal frame was
      already produced.
    * Unknown upstream event types are ignored on purpose and counted in
      ``ignored_events``; ``data: [DONE]`` is tolerated the same way (protocol.md §7).
    * Event data that is not UTF-8 is read with U+FFFD in place of the bad bytes, as the
      SSE standard decodes a stream.
    """

    def feed_many(self, events: Iterable[SSEEvent]) -> list[bytes]:
        """Translate upstream events in order; return the frames to write (possibly none).

        One loop for all the events of a read (issue 19): a text or arguments delta for the
        open block, nearly every event of a stream, is handled inline; every other event
        through the handler table. Stops at the terminal frame: the events after it are not read
        (``feed`` would ignore them) nor counted."""
        out: list[bytes] = []
        if self.done:
            return out
        handlers, decode, dumps, delta_end = HANDLERS, decode_known, orjson.dumps, DELTA_END
        # The fast path's state, read again after anything but a fast delta; the characters
        # sent are added up here and handed over before any handler runs.
        fast_kind, fast_index, prefix = self._fast_kind, self._fast_index, self._prefix
        chars = seen = 0
        for seen, event in enumerate(events, 1):  # noqa: B007 (read after the loop)
            try:
                ev: StreamEvent | UnknownEvent = decode(event.data)
            except msgspec.DecodeError as exc:
                self._out_chars += chars
                chars = 0
                refused = self._refused(event.data, exc, out)
                if refused is None:
                    if self.done:
                        break
                    continue
                ev = refused
            else:
                if type(ev) is fast_kind and ev.output_index == fast_index:
                    # Hot path: a text or arguments delta for the open block (so the message
                    # has started).
                    delta = ev.delta
                    if delta:
                        chars += len(delta)
                        out.append(prefix + dumps(delta) + delta_end)
                    continue
                self._out_chars += chars
                chars = 0
            if not self._started:
                self._start(out)
            handlers[type(ev)](self, ev, out)
            if self.done:
                break
            fast_kind, fast_index, prefix = self._fast_kind, self._fast_index, self._prefix
        self._out_chars += chars
        self.upstream_events += seen
        self.frames_out += len(out)
        return out

    def _refused(
        self, data: bytes, exc: msgspec.DecodeError, out: list[bytes]
    ) -> StreamEvent | UnknownEvent | None:
        """The event ``decode_known`` refused: an unknown type, text that is not UTF-8 or an
        untyped error object comes back as an event to dispatch; ``[DONE]`` and data-less
        keep-alives are ignored (``None``); anything else fails the stream (``None``)."""
        try:
            return decode_refused(data, exc)
        except msgspec.DecodeError as err:
            exc = err
        stripped = data.strip()
        if stripped == b"[DONE]" or not stripped:
            # Some proxies append Chat's sentinel to Responses streams (§7); a data-less
            # event is a keep-alive. Neither is an event.
            self.ignored_events += 1
            return None
        repaired = utf8_replaced(data)
        if repaired is not None:
            try:
                return decode_known(repaired)
            except msgspec.DecodeError as err:
                return self._refused(repaired, err, out)
        untyped = decode_untyped_error(stripped)
        if untyped is not None:
            return untyped
        if not self._started:
            self._start(out)
        self._fail(invalid_event("event", str(exc)), out)
        return None
