"""Chat Completions stream chunks → Anthropic Messages SSE frames (one state machine class).

Pure: no aiohttp, no asyncio (design.md, house style 1-3). Same contract as
``ResponsesStreamTranslator`` (the relay cannot tell them apart): ``feed(event)`` per upstream
SSE event, ``finish()`` at upstream EOF, ``fail(err)`` on a transport failure. Mapping rules
are ``from_chat``'s (the helpers are shared), so a streamed answer accumulates to the same
Message as the non-streaming one.

Output grammar (protocol.md §3.2, §3.4, §10 items 2-5)::

    message_start ping (content_block_start delta* content_block_stop)* message_delta message_stop
    … or, at any point after message_start, one ``error`` frame and nothing else.

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

Interleaving policy (same as stream_responses, §10 item 3). One block is open at a time, with
our own index counter. A text or thinking block gives way at once when another segment has
content (a later continuation starts a new block). Chat has no per-call "done" event, so an
open tool call gives way when its arguments so far parse as a complete JSON object — always
the case when a sequential server (OpenAI, INDEX.md fact 21) starts the next call, so those
calls stream live; a server that interleaves calls has the others buffered and flushed as whole
blocks, in arrival order, when the open one completes or at the finish.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, Final

import msgspec
import orjson

from ..errors import APIError, GatewayError, error_body
from ..schemas.anthropic import StopReason, Usage
from ..schemas.openai_chat import CHUNK_DECODER, ChunkChoice, Delta, FunctionFragment
from ..sse import SSEEvent, encode_frame
from .common import Signer, estimate_tokens, tool_use_id_from_upstream
from .common import message_id as new_message_id
from .content import (
    DELTA_END,
    DELTA_HEAD,
    DELTA_KIND,
    MESSAGE_STOP_FRAME,
    PING_FRAME,
    block_start_frame,
    block_stop_frame,
    message_delta_frame,
    message_start_frame,
)
from .from_chat import chat_error, chat_stop_reason, chat_usage, content_text, server_stop_sequence
from .from_responses import client_tool_name, tool_input_json
from .stop_sequences import StopSequenceScanner

__all__ = ["ChatStreamTranslator"]

_NO_FINISH: Final = "upstream closed the stream before a finish_reason"
_DONE_NO_FINISH: Final = "upstream ended the stream ([DONE]) without a finish_reason"
#: ``index`` key of the legacy ``delta.function_call`` (one call, no index).
_LEGACY: Final = -1

# Segment kinds: the Anthropic block a segment maps to. Values index DELTA_KIND.
_TEXT: Final = 0
_TOOL: Final = 1
_THINK: Final = 2

# Segment states.
_IDLE: Final = 0  # no block: nothing to show yet (blank text, nameless call)
_OPEN: Final = 1  # owns the one open block
_WAITING: Final = 2  # has content but another block is open; in the waiting queue
_DONE: Final = 3  # its block is closed (or it was dropped); later content starts a new one

# Tool argument modes (as in stream_responses).
_ARGS_FIRST: Final = 0  # nothing but whitespace seen yet
_ARGS_LIVE: Final = 1  # began with "{": fragments are forwarded as they come
_ARGS_WHOLE: Final = 2  # began with something else: buffered, sent normalised at the end


class _Seg:
    """One segment of the answer and the state of the Anthropic block it maps to."""

    __slots__ = (
        "args",
        "args_mode",
        "block",
        "brace",
        "call_id",
        "checked",
        "complete",
        "held",
        "index",
        "kind",
        "name",
        "pending",
        "prefix",
        "state",
    )

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.state = _IDLE
        self.block = -1
        self.prefix = b""
        #: fragments waiting for this segment's turn
        self.pending: list[str] = []
        #: text / thinking: whitespace seen before any other character (None once shown)
        self.held: list[str] | None = [] if kind != _TOOL else None
        # tool calls
        self.index: int | None = None  # upstream tool_calls[].index, when it has one
        self.call_id: str | None = None
        self.name: str | None = None
        self.args_mode = _ARGS_FIRST
        self.args: list[str] = []
        #: the last non-blank argument fragment ended with "}" (worth a completeness check)
        self.brace = False
        self.checked = -1  # len(args) at the last completeness check
        self.complete = False


class ChatStreamTranslator:
    """Translate one Chat Completions stream into Anthropic SSE frames.

    Contract (identical to ``ResponsesStreamTranslator``):

    * ``feed(event)`` returns complete, encoded frames ready to write. The first upstream
      event yields ``message_start`` then ``ping``. Output depends only on the sequence of
      events, never on timing or on how the bytes were split.
    * Exactly one terminal frame: ``message_stop`` (after ``message_delta``) or ``error``.
      Then ``done`` is True and every further call returns ``[]``.
    * ``finish()`` at upstream EOF: ends the message normally when a finish_reason was seen
      (a missing ``[DONE]`` is tolerated), else an ``api_error`` frame. ``fail(err)``: the
      error frame for ``err`` unless done.
    * Choices other than index 0 (the gateway never asks for ``n > 1``) and events without
      data are ignored on purpose and counted in ``ignored_events``.
    * A stop sequence found in the text ends the message (``stop_reason: stop_sequence``);
      the relay then closes the upstream. Usage is then estimated (§9.8). A stop sequence the
      server reports (vLLM ``stop_reason``) ends it the same way, with the upstream's usage.
    * Thinking blocks carry ``signature: ""`` and no ``signature_delta`` (from_chat).

    Attributes for the relay and the access log: ``done``; ``error`` (the GatewayError sent
    as the error frame, else None); ``usage`` (final once done, a running estimate before);
    ``stop_reason`` / ``stop_sequence`` (None until a message_delta was sent);
    ``upstream_events``, ``frames_out``, ``ignored_events``.
    """

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
    ) -> None:
        self.model = model
        self.request_id = request_id
        self.message_id = message_id if message_id is not None else new_message_id()
        self.input_tokens = input_tokens
        self._thinking = thinking
        self._stop_sequences = [s for s in stop_sequences or () if s]
        self._scanner = StopSequenceScanner(self._stop_sequences) if self._stop_sequences else None
        self._tool_names = tool_names

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
        self._open: _Seg | None = None
        # Hot path: the open block is the text run and no scanner is active.
        self._fast = False
        self._prefix = b""
        # Hot path: the open call (streaming live) and its upstream index.
        self._fast_call: _Seg | None = None
        self._fast_index: int | None = None
        self._waiting: deque[_Seg] = deque()
        self._text: _Seg | None = None
        self._think: _Seg | None = None
        self._calls: list[_Seg] = []
        self._by_index: dict[int, _Seg] = {}
        self._by_id: dict[str, _Seg] = {}
        self._finish_reason: str | None = None
        self._reported_stop: str | int | None = None
        self._upstream_usage: dict[str, Any] | None = None
        self._out_chars = 0
        self._tool_blocks = 0
        self._refusal = False
        self._finishing = False
        self._draining = False

    # -----------------------------------------------------------------------------------------
    # Public API

    @property
    def usage(self) -> Usage:
        """Final usage once done; until then an estimate from what was sent so far."""
        return self._usage if self._usage is not None else self._estimated_usage()

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
                self._fail(APIError(f"upstream sent an invalid chunk: {_short(str(exc))}"), out)
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

    def finish(self) -> list[bytes]:
        """Upstream EOF: the end of the message if a finish_reason came, else an error."""
        if self.done:
            return []
        out: list[bytes] = []
        self._conclude(out, _NO_FINISH)
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

    def _start(self, out: list[bytes]) -> None:
        self._started = True
        out.append(message_start_frame(self.message_id, self.model, self.input_tokens))
        out.append(PING_FRAME)

    def _end(self, reason: StopReason, usage: Usage, out: list[bytes]) -> None:
        """message_delta + message_stop. Every block is closed by now (§10 item 4)."""
        self.done = True
        self.stop_reason = reason
        self._usage = usage
        out.append(message_delta_frame(reason, self.stop_sequence, usage))
        out.append(MESSAGE_STOP_FRAME)

    def _estimated_usage(self) -> Usage:
        return Usage(input_tokens=self.input_tokens, output_tokens=estimate_tokens(self._out_chars))

    def _fail(self, err: GatewayError, out: list[bytes]) -> None:
        """One ``error`` frame; open blocks stay open (the error ends the stream, §3.2)."""
        self.done = True
        self.error = err
        self._usage = self._estimated_usage()
        out.append(encode_frame(b"error", error_body(err, self.request_id)))

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
            if seg.state == _DONE or seg.args_mode == _ARGS_LIVE:
                continue
            # Arguments that never started a JSON object: one normalised delta (§10 item 5).
            whole = tool_input_json("".join(seg.args))
            if seg.state == _OPEN:
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
            if seg is None or seg.state == _DONE:
                seg = self._think = _Seg(_THINK)
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
            self.stop_sequence = match
            self._flush_all(out)
            self._end("stop_sequence", self._estimated_usage(), out)

    def _text_piece(self, text: str, out: list[bytes]) -> None:
        seg = self._text
        if seg is None or seg.state == _DONE:
            seg = self._text = _Seg(_TEXT)
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
        if seg.state == _DONE or fn is None:
            return  # a closed call takes nothing more (complete JSON can only gain blanks)
        name = fn.name
        if name and seg.name is None:
            seg.name = name
            if seg.state == _IDLE:
                # Start the tool_use block at once, so the client sees the tool name early.
                if self._claim(seg, out):
                    self._open_block(seg, out)
                elif not self.done:
                    self._wait(seg)
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
        seg = _Seg(_TOOL)
        seg.call_id = call_id or None
        self._calls.append(seg)
        if call_id:
            self._by_id[call_id] = seg
        return seg

    def _args(self, seg: _Seg, fragment: str, out: list[bytes]) -> None:
        """An arguments fragment (protocol.md §10 item 5)."""
        mode = seg.args_mode
        if mode == _ARGS_FIRST:
            fragment = fragment.lstrip()
            if not fragment:
                return
            if fragment[0] != "{":
                # Not the start of a JSON object: the SDK would raise on it (§3.4 item 4).
                seg.args_mode = _ARGS_WHOLE
                seg.args.append(fragment)
                return
            seg.args_mode = mode = _ARGS_LIVE
            if seg.state == _OPEN:
                self._enable_fast_call(seg)
        elif mode == _ARGS_WHOLE:
            seg.args.append(fragment)
            return
        seg.args.append(fragment)
        tail = fragment.rstrip()
        if tail:
            seg.brace = tail[-1] == "}"
        self._push(seg, fragment, out)

    # -----------------------------------------------------------------------------------------
    # Blocks

    def _emit(self, seg: _Seg, fragment: str, out: list[bytes]) -> None:
        """One delta into ``seg``'s open block."""
        self._out_chars += len(fragment)
        out.append(seg.prefix + orjson.dumps(fragment) + DELTA_END)

    def _push(self, seg: _Seg, fragment: str, out: list[bytes]) -> None:
        """Send a fragment of ``seg``'s block now if it has the floor, else buffer it."""
        if seg.state == _OPEN:
            self._emit(seg, fragment, out)
            return
        seg.pending.append(fragment)
        if seg.state == _WAITING:
            self._release(out)  # the open call may be complete by now
            return
        if seg.kind == _TOOL and seg.name is None:
            return  # cannot start a tool_use block before its name is known
        if self._claim(seg, out):
            self._open_block(seg, out)
        elif not self.done:
            self._wait(seg)

    def _set_open(self, seg: _Seg | None) -> None:
        self._open = seg
        self._fast = seg is not None and seg.kind == _TEXT and self._scanner is None
        self._fast_call = None
        if seg is None:
            return
        if self._fast:
            self._prefix = seg.prefix
        elif seg.kind == _TOOL and seg.args_mode == _ARGS_LIVE:
            self._enable_fast_call(seg)

    def _enable_fast_call(self, seg: _Seg) -> None:
        """The open call streams live: its plain arguments fragments take the hot path while
        its index still leads to it (fragments without an index go the long way)."""
        index = seg.index
        if index is not None and index != _LEGACY and self._by_index.get(index) is seg:
            self._fast_call = seg
            self._fast_index = index

    def _open_block(self, seg: _Seg, out: list[bytes]) -> None:
        """Start ``seg``'s block (the caller made sure none is open) and flush its buffer."""
        index = self._next_index
        self._next_index += 1
        seg.block = index
        seg.prefix = DELTA_HEAD + str(index).encode() + DELTA_KIND[seg.kind]
        block: dict[str, Any]
        if seg.kind == _TEXT:
            block = {"type": "text", "text": ""}
        elif seg.kind == _TOOL:
            self._tool_blocks += 1
            # Input always {} here: the accumulator replaces it with the parsed partials
            # (§3.4 item 5). A missing id is minted here, once (§9.9).
            block = {
                "type": "tool_use",
                "id": tool_use_id_from_upstream(seg.call_id),
                "name": client_tool_name(seg.name, self._tool_names),
                "input": {},
            }
        else:
            block = {"type": "thinking", "thinking": "", "signature": ""}
        out.append(block_start_frame(index, block))
        seg.state = _OPEN
        self._set_open(seg)
        if seg.pending:
            self._emit(seg, "".join(seg.pending), out)
            seg.pending.clear()

    def _close_block(self, seg: _Seg, out: list[bytes]) -> None:
        out.append(block_stop_frame(seg.block))
        seg.state = _DONE
        self._set_open(None)

    def _closable(self, seg: _Seg) -> bool:
        """May ``seg``'s open block close now? Text and thinking always may (a continuation
        starts a new block); a tool call once its arguments are a complete JSON object."""
        if seg.kind != _TOOL or self._finishing:
            return True
        if seg.args_mode != _ARGS_LIVE or not seg.brace:
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

    def _claim(self, seg: _Seg, out: list[bytes]) -> bool:
        """Can ``seg`` open a block now? The open block closes if it may; the segments already
        waiting go first. False: ``seg`` must wait."""
        while True:
            current = self._open
            if current is None:
                return not self.done
            if current is seg or not self._closable(current):
                return False
            self._close_block(current, out)
            self._drain(out)

    def _release(self, out: list[bytes]) -> None:
        """A waiting segment got more content: let the queue move if the open block may close."""
        current = self._open
        if current is not None and self._closable(current):
            self._close_block(current, out)
            self._drain(out)

    def _wait(self, seg: _Seg) -> None:
        if seg.state != _WAITING:
            seg.state = _WAITING
            self._waiting.append(seg)

    def _drain(self, out: list[bytes]) -> None:
        """Give the floor to waiting segments in order, each flushed as a whole block; one
        that may close gives way at once to the next."""
        if self._draining:
            return
        self._draining = True
        waiting = self._waiting
        while self._open is None and waiting and not self.done:
            seg = waiting.popleft()
            seg.state = _IDLE
            self._open_block(seg, out)
            if (waiting or self._finishing) and self._closable(seg):
                self._close_block(seg, out)
        self._draining = False


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
