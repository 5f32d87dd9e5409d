"""Responses API stream events → Anthropic Messages SSE frames (one state machine class).

Pure: no aiohttp, no asyncio (design.md, house style 1-3). The relay feeds each upstream
:class:`~gateway.sse.SSEEvent` and writes the returned frames; ``finish()`` at upstream EOF,
``fail(err)`` on a transport failure. ``feed`` decodes the event and dispatches it through the
handler table (:mod:`.events`) to the item content (:mod:`.content`) and state (:mod:`.items`).
"""

from __future__ import annotations

import msgspec

from ...errors import invalid_event
from ...schemas.openai_responses_events import (
    StreamEvent,
    UnknownEvent,
    decode_event,
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
    """

    def feed(self, event: SSEEvent) -> list[bytes]:
        """Translate one upstream event; return the frames to write (possibly none)."""
        if self.done:
            return []
        self.upstream_events += 1
        out: list[bytes] = []
        try:
            ev: StreamEvent | UnknownEvent = decode_event(event.data)
        except msgspec.DecodeError as exc:
            data = event.data.strip()
            if data == "[DONE]" or not data:
                # Some proxies append Chat's sentinel to Responses streams (§7); a data-less
                # event is a keep-alive. Neither is an event.
                self.ignored_events += 1
                return out
            untyped = decode_untyped_error(data)
            if untyped is None:
                if not self._started:
                    self._start(out)
                self._fail(invalid_event("event", str(exc)), out)
                self.frames_out += len(out)
                return out
            ev = untyped
        if not self._started:
            self._start(out)
        HANDLERS[type(ev)](self, ev, out)
        self.frames_out += len(out)
        return out
