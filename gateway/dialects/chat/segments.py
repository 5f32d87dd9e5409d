"""The segments of one Chat Completions stream and when their Anthropic blocks open and close.

Pure: no aiohttp, no asyncio. :class:`ChatSegments` is the state
:class:`~.stream.ChatStreamTranslator` feeds deltas to. The lifecycle and block bookkeeping are
:mod:`gateway.anthropic.stream`'s; mapping rules are the non-streaming ones (:mod:`.response`),
so a streamed answer accumulates to the same Message.

Segments. The content of a Chat answer is a few *segments*: the current text run, the current
thinking run, and one per tool call. Tool-call fragments are matched to calls by ``index``;
servers that send none (Ollama < 0.4.7, Gemini) are matched by ``id`` (a new id is a new call,
fragments without either continue the last call); a new ``id`` at an ``index`` already in use
is a new call (Ollama's index 0 for every parallel call, ollama#15457); a call without an id
gets a minted ``toolu_`` id; a call's block starts when its name is known (it may come after
the id, protocol.md §10.12). Text and thinking that are only whitespace so far open no block
(from_chat drops such blocks; templates emit ``"\\n\\n"`` before tool calls).

Interleaving policy (anthropic.stream, §10 item 3). A text or thinking block gives way at once
when another segment has content (a later continuation starts a new block). Chat has no
per-call "done" event, so an open tool call gives way when its arguments so far parse as a
complete JSON object — always the case when a sequential server (OpenAI, INDEX.md fact 21)
starts the next call, so those calls stream live; a server that interleaves calls has the
others buffered and flushed as whole blocks, in arrival order, when the open one completes or
at the finish.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from ...anthropic.stop_sequences import StopSequenceScanner, cut_at_stop_sequence
from ...anthropic.stream import (
    ARGS_FIRST,
    ARGS_LIVE,
    ARGS_WHOLE,
    DONE,
    IDLE,
    OPEN,
    TEXT,
    TOOL,
    BaseStreamTranslator,
    Part,
)
from ...anthropic.strict import strict_arguments
from ...anthropic.tools import tool_input_json
from ...schemas.openai_chat import FunctionFragment

__all__ = ["LEGACY", "ChatSegments", "Seg"]

#: ``index`` key of the legacy ``delta.function_call`` (one call, no index).
LEGACY: Final = -1

# Segment kinds and states: anthropic.stream's. IDLE: nothing to show yet (blank text, nameless
# call); DONE: its block is closed (or it was dropped), later content starts a new segment.


class Seg(Part):
    """One segment of the answer and the state of the Anthropic block it maps to."""

    __slots__ = ("args", "brace", "checked", "complete", "held", "index")

    def __init__(self, kind: int) -> None:
        super().__init__(kind)
        #: text / thinking: whitespace seen before any other character (None once shown)
        self.held: list[str] | None = [] if kind != TOOL else None
        # tool calls
        self.index: int | None = None  # upstream tool_calls[].index, when it has one
        self.args: list[str] = []
        #: the last non-blank argument fragment ended with "}" (worth a completeness check)
        self.brace = False
        self.checked = -1  # len(args) at the last completeness check
        self.complete = False


class ChatSegments(BaseStreamTranslator[Seg]):
    """The segment and block state of one Chat stream (see the module docstring)."""

    _CLOSED = DONE
    _RETRY_ON_WAIT = True  # an open call may be complete JSON by now

    def _init_state(self) -> None:
        self._scanner = StopSequenceScanner(self._stop_sequences) if self._stop_sequences else None
        #: a strict answer's text, held until the finish and restored whole
        self._hold: list[str] | None = (
            [] if self._strict.text() is not None or self._citations is not None else None
        )
        # Hot path: the open block is the text run and no scanner is active.
        self._fast = False
        # Hot path: the open call (streaming live) and its upstream index.
        self._fast_call: Seg | None = None
        self._fast_index: int | None = None
        self._text: Seg | None = None
        self._think: Seg | None = None
        self._calls: list[Seg] = []
        self._by_index: dict[int, Seg] = {}
        self._by_id: dict[str, Seg] = {}
        self._finish_reason: str | None = None
        self._reported_stop: str | int | None = None
        self._upstream_usage: dict[str, Any] | None = None
        self._service_tier: str | None = None
        self._finishing = False

    def _release_held(self, out: list[bytes]) -> None:
        """Emit the text the scanner holds back ("" after a match)."""
        assert self._scanner is not None
        tail = self._scanner.flush()
        if tail:
            self._text_piece(tail, out)

    def _release_hold(self, out: list[bytes]) -> None:
        """A strict answer's held text, restored, as visible text (stop sequences apply)."""
        held, self._hold = self._hold, None
        if not held:
            return
        text = "".join(held)
        if self._citations is not None:
            # quoted sources cited (issue 15): whole blocks, stop sequences applied first
            match = None
            if self._stop_sequences:
                text, match = cut_at_stop_sequence(text, self._stop_sequences)
            current = self._open
            if current is not None:
                self._close_block(current, out)
            self._emit_cited(text, out)
            if match is not None:
                self._flush_all(out)
                self._stop_on_sequence(match, out)
            return
        restorer = self._strict.text()
        if restorer is not None:
            self._visible(restorer.restore_text(text), out)

    def _flush_all(self, out: list[bytes]) -> None:
        """The answer is complete (finish_reason, or a stop sequence matched): emit every
        segment still held, in order, and close every block."""
        if self._hold is not None:
            self._release_hold(out)
            if self.done:
                return  # a stop sequence matched in it: that ended the message
        if self._scanner is not None:
            self._release_held(out)
        self._finishing = True  # every segment is complete now: each block may close
        for seg in self._calls:
            if seg.state == DONE or seg.args_mode == ARGS_LIVE:
                continue
            # Arguments that never started a JSON object, or a strict call's, restored: one
            # normalised delta (§10 item 5).
            whole = tool_input_json(strict_arguments(self._strict, seg.name, "".join(seg.args)))
            if seg.state == OPEN:
                self._emit(seg, whole, out)
            else:
                seg.pending.append(whole)
        current = self._open
        if current is not None:
            self._close_block(current, out)
        self._drain(out)

    def _visible(self, text: str, out: list[bytes]) -> None:
        """Visible text (content or refusal), stop sequences applied (§9.8)."""
        if self._hold is not None:
            self._hold.append(text)
            return
        scanner = self._scanner
        if scanner is None:
            self._text_piece(text, out)
            return
        safe, match = scanner.feed(text)
        if safe:
            self._text_piece(safe, out)
        if match is not None and not self.done:
            self._flush_all(out)
            self._stop_on_sequence(match, out)

    def _text_piece(self, text: str, out: list[bytes]) -> None:
        seg = self._text
        if seg is None or seg.state == DONE:
            seg = self._text = Seg(TEXT)
        self._piece(seg, text, out)

    def _piece(self, seg: Seg, text: str, out: list[bytes]) -> None:
        """Text or thinking: held while only whitespace, then pushed."""
        held = seg.held
        if held is not None:
            if text.isspace():
                held.append(text)
                return
            seg.held = None
            if held:
                text = "".join(held) + text
        self._push(seg, text, out)

    def _fragment(
        self, index: int | None, call_id: str | None, fn: FunctionFragment | None, out: list[bytes]
    ) -> None:
        """One ``tool_calls[]`` fragment (or the legacy ``function_call``)."""
        seg = self._call_for(index, call_id)
        if seg.state == DONE or fn is None:
            return  # a closed call takes nothing more (complete JSON can only gain blanks)
        name = fn.name
        if name and seg.name is None:
            seg.name = name
            if seg.args_mode == ARGS_FIRST and self._strict.tool(name) is not None:
                seg.args_mode = ARGS_WHOLE  # restored whole at the finish
            if seg.state == IDLE:
                # Start the tool_use block at once, so the client sees the tool name early.
                self._start_or_wait(seg, out)
        if fn.arguments:
            self._args(seg, fn.arguments, out)

    def _call_for(self, index: int | None, call_id: str | None) -> Seg:
        """The call a fragment belongs to (module docstring, "Segments")."""
        if index is not None:
            seg = self._by_index.get(index)
            if seg is not None:
                if not call_id or seg.call_id == call_id:
                    return seg
                if seg.call_id is None and seg.block < 0:
                    seg.call_id = call_id  # the id came after the first fragment
                    self._by_id[call_id] = seg
                    return seg
            seg = self._new_call(call_id)
            seg.index = index
            self._by_index[index] = seg
            if index == self._fast_index:
                self._fast_call = None  # the index now leads to the new call
            return seg
        if call_id:
            found = self._by_id.get(call_id)
            return found if found is not None else self._new_call(call_id)
        return self._calls[-1] if self._calls else self._new_call(None)

    def _new_call(self, call_id: str | None) -> Seg:
        seg = Seg(TOOL)
        seg.call_id = call_id or None
        self._calls.append(seg)
        if call_id:
            self._by_id[call_id] = seg
        return seg

    def _args(self, seg: Seg, fragment: str, out: list[bytes]) -> None:
        """An arguments fragment (protocol.md §10 item 5)."""
        mode = seg.args_mode
        if mode == ARGS_FIRST:
            fragment = fragment.lstrip()
            if not fragment:
                return
            if fragment[0] != "{":
                # Not the start of a JSON object: the SDK would raise on it (§3.4 item 4).
                seg.args_mode = ARGS_WHOLE
                seg.args.append(fragment)
                return
            seg.args_mode = mode = ARGS_LIVE
            if seg.state == OPEN:
                self._enable_fast_call(seg)
        elif mode == ARGS_WHOLE:
            seg.args.append(fragment)
            return
        seg.args.append(fragment)
        tail = fragment.rstrip()
        if tail:
            seg.brace = tail[-1] == "}"
        self._push(seg, fragment, out)

    def _set_open(self, seg: Seg | None) -> None:
        self._open = seg
        self._fast = seg is not None and seg.kind == TEXT and self._scanner is None
        self._fast_call = None
        if seg is None:
            return
        if self._fast:
            self._prefix = seg.prefix
        elif seg.kind == TOOL and seg.args_mode == ARGS_LIVE:
            self._enable_fast_call(seg)

    def _enable_fast_call(self, seg: Seg) -> None:
        """The open call streams live: its plain arguments fragments take the hot path while
        its index still leads to it (fragments without an index go the long way)."""
        index = seg.index
        if index is not None and index != LEGACY and self._by_index.get(index) is seg:
            self._fast_call = seg
            self._fast_index = index

    def _closable(self, seg: Seg) -> bool:
        """May ``seg``'s open block close now? Text and thinking always may (a continuation
        starts a new block); a tool call once its arguments are a complete JSON object."""
        if seg.kind != TOOL or self._finishing:
            return True
        if seg.args_mode != ARGS_LIVE or not seg.brace:
            return False
        n = len(seg.args)
        if seg.checked != n:
            # Parsed only when the arguments so far end with "}" and grew since the last try.
            seg.checked = n
            try:
                seg.complete = isinstance(orjson.loads("".join(seg.args)), dict)
            except orjson.JSONDecodeError:
                seg.complete = False
        return seg.complete

    def _take_turn(self, seg: Seg, out: list[bytes]) -> None:
        """A waiting segment is flushed as a whole block; one that may close gives way at once
        to the next (and at the finish, every one may)."""
        self._open_block(seg, out)
        if (self._waiting or self._finishing) and self._closable(seg):
            self._close_block(seg, out)
