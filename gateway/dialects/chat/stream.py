"""Chat Completions stream chunks → Anthropic Messages SSE frames (one state machine class).

Pure: no aiohttp, no asyncio (design.md, house style 1-3). Same contract as
``ResponsesStreamTranslator`` (the relay cannot tell them apart): ``feed(event)`` per upstream
SSE event, ``finish()`` at upstream EOF, ``fail(err)`` on a transport failure. Mapping rules
are ``from_chat``'s (the helpers are shared), so a streamed answer accumulates to the same
Message as the non-streaming one. The lifecycle, the output grammar and the block bookkeeping
are :mod:`gateway.anthropic.stream`'s; this module keeps the chunk dispatch and the segments.

Upstream shape (protocol.md §8, INDEX.md facts 20-25): ``data:`` chunks whose single choice
carries a ``delta`` (``content``, ``refusal``, ``reasoning_content`` / ``reasoning``,
``tool_calls`` fragments), then a chunk with ``finish_reason``, then — with
``stream_options.include_usage`` — a chunk with ``choices: []`` and the usage, then
``data: [DONE]``. The message ends at ``[DONE]`` (or at EOF after a finish_reason: some
servers omit the sentinel), so the final usage is in message_delta; a stream that ends without
a finish_reason, or with an ``{"error": …}`` chunk, ends with one ``error`` frame.

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

import msgspec
import orjson

from ...anthropic.frames import DELTA_END
from ...anthropic.stop_sequences import StopSequenceScanner
from ...anthropic.stream import (
    ARGS_FIRST,
    ARGS_LIVE,
    ARGS_WHOLE,
    DONE,
    IDLE,
    OPEN,
    TEXT,
    THINK,
    TOOL,
    BaseStreamTranslator,
    Part,
)
from ...anthropic.tools import tool_input_json
from ...errors import APIError, invalid_event
from ...schemas.openai_chat import CHUNK_DECODER, ChunkChoice, Delta, FunctionFragment
from ...sse import SSEEvent
from .response import chat_error, chat_stop_reason, chat_usage, content_text, server_stop_sequence

__all__ = ["ChatStreamTranslator"]

_NO_FINISH: Final = "upstream closed the stream before a finish_reason"
_DONE_NO_FINISH: Final = "upstream ended the stream ([DONE]) without a finish_reason"
#: ``index`` key of the legacy ``delta.function_call`` (one call, no index).
_LEGACY: Final = -1

# Segment kinds and states: anthropic.stream's. IDLE: nothing to show yet (blank text, nameless
# call); DONE: its block is closed (or it was dropped), later content starts a new segment.


class _Seg(Part):
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


class ChatStreamTranslator(BaseStreamTranslator[_Seg]):
    """Translate one Chat Completions stream into Anthropic SSE frames.

    Contract: :class:`~gateway.anthropic.stream.BaseStreamTranslator`'s (the same as
    ``ResponsesStreamTranslator``'s), and:

    * ``finish()`` at upstream EOF: ends the message normally when a finish_reason was seen
      (a missing ``[DONE]`` is tolerated), else an ``api_error`` frame.
    * Choices other than index 0 (the gateway never asks for ``n > 1``) and events without
      data are ignored on purpose and counted in ``ignored_events``.
    * A stop sequence the server reports (vLLM ``stop_reason``) ends the message like one
      found in the text, with the upstream's usage.
    * Thinking blocks carry ``signature: ""`` and no ``signature_delta`` (from_chat).
    """

    _CLOSED = DONE
    _RETRY_ON_WAIT = True  # an open call may be complete JSON by now

    def _init_state(self) -> None:
        self._scanner = StopSequenceScanner(self._stop_sequences) if self._stop_sequences else None
        # Hot path: the open block is the text run and no scanner is active.
        self._fast = False
        # Hot path: the open call (streaming live) and its upstream index.
        self._fast_call: _Seg | None = None
        self._fast_index: int | None = None
        self._text: _Seg | None = None
        self._think: _Seg | None = None
        self._calls: list[_Seg] = []
        self._by_index: dict[int, _Seg] = {}
        self._by_id: dict[str, _Seg] = {}
        self._finish_reason: str | None = None
        self._reported_stop: str | int | None = None
        self._upstream_usage: dict[str, Any] | None = None
        self._finishing = False

    def feed(self, event: SSEEvent) -> list[bytes]:
        """Translate one upstream event; return the frames to write (possibly none)."""
        if self.done:
            return []
        self.upstream_events += 1
        out: list[bytes] = []
        if not self._started:
            self._start(out)
        try:
            chunk = CHUNK_DECODER.decode(event.data)
        except msgspec.DecodeError as exc:
            data = event.data.strip()
            if data == "[DONE]":
                self._conclude(out, _DONE_NO_FINISH)
            elif not data:
                self.ignored_events += 1  # a data-less event is a keep-alive
            else:
                self._fail(invalid_event("chunk", str(exc)), out)
            self.frames_out += len(out)
            return out
        if chunk.error:
            self._fail(chat_error(chunk.error), out)
        else:
            for choice in chunk.choices or ():
                if choice.index != 0:
                    self.ignored_events += 1  # n > 1 is never requested (protocol.md §10.12)
                    continue
                self._choice(choice, out)
                if self.done:
                    break
            if chunk.usage:
                # The usage chunk (choices: []) after the finish; some servers put usage on
                # every chunk: the last one is the total.
                self._upstream_usage = chunk.usage
        self.frames_out += len(out)
        return out

    def _eof(self, out: list[bytes]) -> None:
        """The end of the message if a finish_reason came, else an error."""
        self._conclude(out, _NO_FINISH)

    # -----------------------------------------------------------------------------------------
    # Message lifecycle

    def _conclude(self, out: list[bytes], missing_finish: str) -> None:
        """``[DONE]`` or EOF: end the message, or fail when no finish_reason came."""
        finish = self._finish_reason
        if finish is None:
            self._fail(APIError(missing_finish), out)
            return
        self.stop_sequence = server_stop_sequence(finish, self._reported_stop, self._stop_sequences)
        reason = chat_stop_reason(
            finish,
            refusal=self._refusal,
            tool_use=self._tool_blocks > 0,
            stop_sequence=self.stop_sequence,
        )
        usage = chat_usage(
            self._upstream_usage, input_tokens=self.input_tokens, output_chars=self._out_chars
        )
        self._end(reason, usage, out)

    def _choice(self, choice: ChunkChoice, out: list[bytes]) -> None:
        if self._finish_reason is not None:
            self.ignored_events += 1  # nothing belongs to the message after its finish
            return
        delta = choice.delta
        if delta is not None:
            self._delta(delta, out)
            if self.done:
                return
        if choice.finish_reason is not None:
            self._finish_reason = choice.finish_reason
            self._reported_stop = choice.stop_reason
            self._flush_all(out)

    def _release_held(self, out: list[bytes]) -> None:
        """Emit the text the scanner holds back ("" after a match)."""
        assert self._scanner is not None
        tail = self._scanner.flush()
        if tail:
            self._text_piece(tail, out)

    def _flush_all(self, out: list[bytes]) -> None:
        """The answer is complete (finish_reason, or a stop sequence matched): emit every
        segment still held, in order, and close every block."""
        if self._scanner is not None:
            self._release_held(out)
        self._finishing = True  # every segment is complete now: each block may close
        for seg in self._calls:
            if seg.state == DONE or seg.args_mode == ARGS_LIVE:
                continue
            # Arguments that never started a JSON object: one normalised delta (§10 item 5).
            whole = tool_input_json("".join(seg.args))
            if seg.state == OPEN:
                self._emit(seg, whole, out)
            else:
                seg.pending.append(whole)
        current = self._open
        if current is not None:
            self._close_block(current, out)
        self._drain(out)
        # What is left never had a block: nameless calls and blank text are dropped.

    # -----------------------------------------------------------------------------------------
    # Deltas

    def _delta(self, delta: Delta, out: list[bytes]) -> None:
        reasoning = delta.reasoning_content or delta.reasoning
        if self._scanner is not None and (
            (reasoning and self._thinking) or delta.tool_calls or delta.function_call
        ):
            # The text run ends here: text held back for a possible stop sequence goes out
            # before the next block, in the order from_chat gives.
            self._release_held(out)
        if reasoning and self._thinking:
            seg = self._think
            if seg is None or seg.state == DONE:
                seg = self._think = _Seg(THINK)
            self._piece(seg, reasoning, out)
        content = delta.content
        if content:
            if type(content) is str:
                if self._fast:
                    self._out_chars += len(content)
                    out.append(self._prefix + orjson.dumps(content) + DELTA_END)
                else:
                    self._visible(content, out)
            else:
                text = content_text(content)
                if text:
                    self._visible(text, out)
            if self.done:
                return
        if delta.refusal:
            self._refusal = True
            self._visible(delta.refusal, out)
            if self.done:
                return
        fragments = delta.tool_calls
        if fragments:
            for frag in fragments:
                fn = frag.function
                seg = self._fast_call
                if (
                    seg is not None
                    and fn is not None
                    and frag.id is None
                    and fn.name is None
                    and frag.index == self._fast_index
                ):
                    # Hot path: an arguments fragment for the open, streaming call.
                    args = fn.arguments
                    if args:
                        seg.args.append(args)
                        tail = args.rstrip()
                        if tail:
                            seg.brace = tail[-1] == "}"
                        self._out_chars += len(args)
                        out.append(seg.prefix + orjson.dumps(args) + DELTA_END)
                    continue
                self._fragment(frag.index, frag.id, fn, out)
        if delta.function_call is not None:
            self._fragment(_LEGACY, None, delta.function_call, out)

    def _visible(self, text: str, out: list[bytes]) -> None:
        """Visible text (content or refusal), stop sequences applied (§9.8)."""
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
            seg = self._text = _Seg(TEXT)
        self._piece(seg, text, out)

    def _piece(self, seg: _Seg, text: str, out: list[bytes]) -> None:
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
            if seg.state == IDLE:
                # Start the tool_use block at once, so the client sees the tool name early.
                self._start_or_wait(seg, out)
        if fn.arguments:
            self._args(seg, fn.arguments, out)

    def _call_for(self, index: int | None, call_id: str | None) -> _Seg:
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

    def _new_call(self, call_id: str | None) -> _Seg:
        seg = _Seg(TOOL)
        seg.call_id = call_id or None
        self._calls.append(seg)
        if call_id:
            self._by_id[call_id] = seg
        return seg

    def _args(self, seg: _Seg, fragment: str, out: list[bytes]) -> None:
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

    # -----------------------------------------------------------------------------------------
    # Blocks (the bookkeeping is gateway.anthropic.stream's)

    def _set_open(self, seg: _Seg | None) -> None:
        self._open = seg
        self._fast = seg is not None and seg.kind == TEXT and self._scanner is None
        self._fast_call = None
        if seg is None:
            return
        if self._fast:
            self._prefix = seg.prefix
        elif seg.kind == TOOL and seg.args_mode == ARGS_LIVE:
            self._enable_fast_call(seg)

    def _enable_fast_call(self, seg: _Seg) -> None:
        """The open call streams live: its plain arguments fragments take the hot path while
        its index still leads to it (fragments without an index go the long way)."""
        index = seg.index
        if index is not None and index != _LEGACY and self._by_index.get(index) is seg:
            self._fast_call = seg
            self._fast_index = index

    def _closable(self, seg: _Seg) -> bool:
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

    def _take_turn(self, seg: _Seg, out: list[bytes]) -> None:
        """A waiting segment is flushed as a whole block; one that may close gives way at once
        to the next (and at the finish, every one may)."""
        self._open_block(seg, out)
        if (self._waiting or self._finishing) and self._closable(seg):
            self._close_block(seg, out)
