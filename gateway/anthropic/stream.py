"""What every stream translator shares: the message lifecycle and the block bookkeeping.

Pure: no aiohttp, no asyncio (design.md, house style 1-3). The dialects' stream translators
(``dialects/responses/stream.py``, ``dialects/chat/stream.py``) subclass
:class:`BaseStreamTranslator` and keep only their own event dispatch
(``feed`` or ``feed_many``, with its hot path inline) and quirks; the relay cannot tell them apart.

Output grammar (protocol.md §3.2, §3.4, §10 items 2-5)::

    message_start ping (content_block_start delta* content_block_stop)* message_delta message_stop
    … or, at any point after message_start, one ``error`` frame and nothing else.

Blocks. The upstream answer arrives as *parts* (a Responses output item, a Chat segment), each
mapping to one Anthropic block kind. One block is open at a time, with our own index counter
(0, 1, 2 … in start order, never the upstream's ``output_index``, §10 item 2). A part whose
content arrives while another part's block is open and cannot give way waits in a queue and is
later flushed as a whole block, in arrival order (§10 item 3). Which open block may give way,
what a part does when its turn comes and what a closed part may still do are the dialect's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import orjson

from ..errors import GatewayError, error_body
from ..schemas.anthropic_out import StopReason, Usage
from ..sse import SSEEvent
from ..sse_out import encode_frame
from .citations import CitationPlan
from .frames import (
    DELTA_END,
    DELTA_HEAD,
    DELTA_KIND,
    MESSAGE_STOP_FRAME,
    PING_FRAME,
    block_start_frame,
    block_stop_frame,
    message_delta_frame,
    message_start_frame,
    text_block_frames,
)
from .ids import message_id as new_message_id
from .ids import tool_use_id_from_upstream
from .signatures import Signer
from .stop import refusal_details
from .stream_parts import (
    ARGS_FIRST,
    ARGS_LIVE,
    ARGS_WHOLE,
    DONE,
    IDLE,
    OPEN,
    SERVER,
    TEXT,
    THINK,
    TOOL,
    WAITING,
    Part,
)
from .strict import NO_STRICT, StrictPlan
from .tools import client_tool_name
from .usage import echo_speed, estimate_tokens

__all__ = [
    "ARGS_FIRST",
    "ARGS_LIVE",
    "ARGS_WHOLE",
    "DONE",
    "IDLE",
    "OPEN",
    "SERVER",
    "TEXT",
    "THINK",
    "TOOL",
    "WAITING",
    "BaseStreamTranslator",
    "Part",
]

P = TypeVar("P", bound=Part)


class BaseStreamTranslator(ABC, Generic[P]):
    """The message lifecycle and block bookkeeping of one upstream stream.

    Contract (the subclass's ``feed`` keeps it too):

    * ``feed(event)`` (``feed_many(events)`` for several) returns complete, encoded frames
      (``event: NAME\\ndata: JSON\\n\\n``, compact JSON) ready to write. The first upstream
      event yields ``message_start`` then ``ping``. Output depends only on the sequence of
      events, never on timing, on how the bytes were split or on how the events were
      grouped into ``feed_many`` calls.
    * Exactly one terminal frame: ``message_stop`` (after ``message_delta``) or ``error``.
      Then ``done`` is True and every further call returns ``[]``.
    * ``finish()`` at upstream EOF (the dialect's :meth:`_eof` decides how the message ends);
      ``fail(err)``: the error frame for ``err`` unless done.
    * A stop-sequence match ends the message (``stop_reason: stop_sequence``); the relay then
      closes the upstream. Usage is then estimated (§9.8).

    Attributes for the relay and the access log: ``done``; ``error`` (the GatewayError sent
    as the error frame, else None); ``usage`` (the final usage once done, a running estimate
    before that, e.g. when the client went away); ``stop_reason`` / ``stop_sequence`` (None
    until a message_delta was sent); ``upstream_events``, ``frames_out``, ``ignored_events``.
    """

    #: The state a part's block leaves it in when it closes: IDLE when more content of the
    #: same part starts a new block, DONE when the dialect starts a new part instead.
    _CLOSED: ClassVar[int] = IDLE
    #: Whether more content for a waiting part retries the open block (:meth:`_release`):
    #: for a dialect whose open block may become closable while it streams.
    _RETRY_ON_WAIT: ClassVar[bool] = False

    def __init__(
        self,
        *,
        model: str,
        signer: Signer,
        thinking: bool,
        request_id: str | None = None,
        stop_sequences: list[str] | None = None,
        tool_names: Mapping[str, str] | None = None,
        message_id: str | None = None,
        input_tokens: int = 0,
        blocked_domains: Sequence[str] = (),
        strict: StrictPlan = NO_STRICT,
        citations: CitationPlan | None = None,
    ) -> None:
        self.model = model
        self.request_id = request_id
        self.message_id = message_id if message_id is not None else new_message_id()
        self.input_tokens = input_tokens
        self._signer = signer
        self._thinking = thinking
        self._stop_sequences = [s for s in stop_sequences or () if s]
        self._tool_names = tool_names
        #: web search ``blocked_domains``: left out of hosted search results and citations
        self._blocked = tuple(blocked_domains)
        #: strict schemas whose answers are restored (text held, arguments buffered)
        self._strict = strict
        #: citable sources: the answer's text is held and sent as cited blocks (issue 15)
        self._citations = citations

        #: top-level fields for the final message_delta (``context_management``), set by the
        #: handler
        self.delta_extra: dict[str, Any] | None = None
        #: end the message after a compaction block (``pause_after_compaction``), set by the
        #: handler
        self.pause_after_compaction = False
        #: the client asked for ``speed: fast`` (echoed in the final usage), set by the handler
        self.fast_requested = False
        #: ``stop_details`` of a policy refusal (a model's own refusal has none)
        self._stop_details: dict[str, Any] | None = None
        self.done = False
        self.error: GatewayError | None = None
        self._usage: Usage | None = None
        self.stop_reason: StopReason | None = None
        self.stop_sequence: str | None = None
        self.upstream_events = 0
        self.frames_out = 0
        self.ignored_events = 0

        self._started = False
        self._next_index = 0
        self._open: P | None = None
        self._waiting: deque[P] = deque()
        #: the open block's delta prefix, where the dialect's hot path reads it
        self._prefix = b""
        self._out_chars = 0
        self._tool_blocks = 0
        self._refusal = False
        self._draining = False
        self._init_state()

    # -----------------------------------------------------------------------------------------
    # Public API

    def feed(self, event: SSEEvent) -> list[bytes]:
        """Translate one upstream event; return the frames to write (possibly none)."""
        return self.feed_many((event,))

    @abstractmethod
    def feed_many(self, events: Iterable[SSEEvent]) -> list[bytes]:
        """Translate the events of one upstream read in order; return all their frames.

        The dialect's own loop, with its hot path inline: it counts ``upstream_events`` and
        ``frames_out``, starts the message on the first event, and stops at the terminal
        frame (later events are neither read nor counted)."""

    @property
    def usage(self) -> Usage:
        """Final usage once done; until then an estimate from what was sent so far."""
        return self._usage if self._usage is not None else self._estimated_usage()

    def finish(self) -> list[bytes]:
        """Upstream EOF: whatever the dialect makes of it (:meth:`_eof`)."""
        if self.done:
            return []
        out: list[bytes] = []
        self._eof(out)
        self.frames_out += len(out)
        return out

    def fail(self, err: GatewayError) -> list[bytes]:
        """A transport failure or timeout seen by the relay → one ``error`` frame."""
        if self.done:
            return []
        out: list[bytes] = []
        self._fail(err, out)
        self.frames_out += len(out)
        return out

    # -----------------------------------------------------------------------------------------
    # Message lifecycle

    @abstractmethod
    def _init_state(self) -> None:
        """Set up the dialect's own per-stream state (the last step of ``__init__``)."""

    @abstractmethod
    def _eof(self, out: list[bytes]) -> None:
        """The upstream closed the stream before a terminal frame: end or fail the message."""

    def _start(self, out: list[bytes]) -> None:
        self._started = True
        out.append(message_start_frame(self.message_id, self.model, self.input_tokens))
        out.append(PING_FRAME)

    def _end(self, reason: StopReason, usage: Usage, out: list[bytes]) -> None:
        """message_delta + message_stop. Every block is closed by now (§10 item 4)."""
        self.done = True
        self.stop_reason = reason
        self._usage = usage
        if self.fast_requested:
            echo_speed(usage)
        details = None
        if reason == "refusal":
            details = self._stop_details or refusal_details()
        out.append(
            message_delta_frame(reason, self.stop_sequence, usage, self.delta_extra, details)
        )
        out.append(MESSAGE_STOP_FRAME)

    def _estimated_usage(self) -> Usage:
        return Usage(input_tokens=self.input_tokens, output_tokens=estimate_tokens(self._out_chars))

    def _fail(self, err: GatewayError, out: list[bytes]) -> None:
        """One ``error`` frame; open blocks stay open (the error ends the stream, §3.2)."""
        self.done = True
        self.error = err
        self._usage = self._estimated_usage()
        out.append(encode_frame(b"error", error_body(err, self.request_id)))

    def _stop_on_sequence(self, match: str, out: list[bytes]) -> None:
        """A stop sequence completed: the message ends here (§9.8); upstream usage is lost."""
        self.stop_sequence = match
        self._end("stop_sequence", self._estimated_usage(), out)

    # -----------------------------------------------------------------------------------------
    # Blocks

    @abstractmethod
    def _set_open(self, part: P | None) -> None:
        """Record the open part (None: no block open) and set up the dialect's hot path."""

    @abstractmethod
    def _closable(self, part: P) -> bool:
        """May ``part``'s open block close now, to give way to another part?"""

    @abstractmethod
    def _take_turn(self, part: P, out: list[bytes]) -> None:
        """``part`` left the waiting queue and nothing is open: flush it as a block."""

    def _emit(self, part: P, fragment: str, out: list[bytes]) -> None:
        """One delta into ``part``'s open block."""
        self._out_chars += len(fragment)
        out.append(part.prefix + orjson.dumps(fragment) + DELTA_END)

    def _emit_cited(self, text: str, out: list[bytes]) -> None:
        """Held answer text as whole blocks, quoted sources cited (:mod:`.citations`); the
        caller made sure no block is open."""
        assert self._citations is not None
        for block in self._citations.segments(text):
            self._out_chars += len(block.text)
            out += text_block_frames(self._take_index(), block)

    def _take_index(self) -> int:
        """The next Anthropic block index (our own counter, §10 item 2)."""
        index = self._next_index
        self._next_index += 1
        return index

    def _open_block(self, part: P, out: list[bytes]) -> None:
        """Start ``part``'s block (the caller made sure none is open) and flush its buffer."""
        index = self._take_index()
        part.block = index
        part.prefix = DELTA_HEAD + str(index).encode() + DELTA_KIND[part.kind]
        block: dict[str, Any]
        if part.kind == TEXT:
            block = {"type": "text", "text": ""}
        elif part.kind == TOOL:
            self._tool_blocks += 1
            # Input always {} here: the accumulator replaces it with the parsed partials
            # (§3.4 item 5), and Claude Code needs the deltas (claude-code.md §4). A missing
            # id is minted here, once (§9.9).
            block = {
                "type": "tool_use",
                "id": tool_use_id_from_upstream(part.call_id),
                "name": client_tool_name(part.name, self._tool_names),
                "input": {},
            }
        else:
            block = {"type": "thinking", "thinking": "", "signature": ""}
        out.append(block_start_frame(index, block))
        part.state = OPEN
        self._set_open(part)
        if part.pending:
            self._emit(part, "".join(part.pending), out)
            part.pending.clear()

    def _close_block(self, part: P, out: list[bytes]) -> None:
        out.append(block_stop_frame(part.block))
        part.state = self._CLOSED
        self._set_open(None)

    def _claim(self, part: P, out: list[bytes]) -> bool:
        """Can ``part`` open a block now? The open block closes if it may give way; the parts
        already waiting go first. False: ``part`` must wait."""
        while True:
            current = self._open
            if current is None:
                return not self.done
            if current is part or not self._closable(current):
                return False
            self._close_block(current, out)
            self._drain(out)

    def _start_or_wait(self, part: P, out: list[bytes]) -> None:
        """Open ``part``'s block now if it can have the floor, else queue it."""
        if self._claim(part, out):
            self._open_block(part, out)
        elif not self.done:
            self._wait(part)

    def _wait(self, part: P) -> None:
        if part.state != WAITING:
            part.state = WAITING
            self._waiting.append(part)

    def _push(self, part: P, fragment: str, out: list[bytes]) -> None:
        """Send a fragment of ``part``'s block now if it has the floor, else buffer it."""
        if part.state == OPEN:
            self._emit(part, fragment, out)
            return
        part.pending.append(fragment)
        if part.state == WAITING:
            if self._RETRY_ON_WAIT:
                self._release(out)
            return
        if part.kind == TOOL and part.name is None:
            return  # cannot start a tool_use block before its name is known
        self._start_or_wait(part, out)

    def _release(self, out: list[bytes]) -> None:
        """Let the queue move if the open block may close now."""
        current = self._open
        if current is not None and self._closable(current):
            self._close_block(current, out)
            self._drain(out)

    def _drain(self, out: list[bytes]) -> None:
        """Give the floor to waiting parts in order, each flushed as a whole block."""
        if self._draining:
            return  # the loop below is already running (a turn inside it closed a block)
        self._draining = True
        waiting = self._waiting
        while self._open is None and waiting and not self.done:
            part = waiting.popleft()
            part.state = IDLE
            self._take_turn(part, out)
        self._draining = False
