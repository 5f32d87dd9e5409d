"""Chat Completions stream chunks → Anthropic Messages SSE frames (one state machine class).

Pure: no aiohttp, no asyncio (design.md, house style 1-3). Same contract as the Responses
stream translator (the relay cannot tell them apart): ``feed_many(events)`` per upstream read,
``finish()`` at upstream EOF, ``fail(err)`` on a transport failure. This module reads the
chunks and ends the message; the segments and their blocks are :mod:`.segments`'.

Upstream shape (protocol.md §8, INDEX.md facts 20-25): ``data:`` chunks whose single choice
carries a ``delta`` (``content``, ``refusal``, ``reasoning_content`` / ``reasoning``,
``tool_calls`` fragments), then a chunk with ``finish_reason``, then — with
``stream_options.include_usage`` — a chunk with ``choices: []`` and the usage, then
``data: [DONE]``. The message ends at ``[DONE]`` (or at EOF after a finish_reason: some
servers omit the sentinel), so the final usage is in message_delta; a stream that ends without
a finish_reason, or with an ``{"error": …}`` chunk, ends with one ``error`` frame.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec
import orjson

from ...anthropic.frames import DELTA_END
from ...anthropic.stream import (
    DONE,
    THINK,
)
from ...anthropic.usage import set_service_tier, usage_from_chat
from ...encoding import utf8_replaced
from ...errors import APIError, invalid_event
from ...schemas.openai_chat import CHUNK_DECODER, Chunk, ChunkChoice, Delta
from ...sse import SSEEvent
from .response import chat_error, chat_stop_reason, chat_usage, content_text, server_stop_sequence
from .segments import LEGACY, ChatSegments, Seg

__all__ = ["ChatStreamTranslator"]

_NO_FINISH: Final = "upstream closed the stream before a finish_reason"
_DONE_NO_FINISH: Final = "upstream ended the stream ([DONE]) without a finish_reason"


class ChatStreamTranslator(ChatSegments):
    """Translate one Chat Completions stream into Anthropic SSE frames.

    Contract: :class:`~gateway.anthropic.stream.BaseStreamTranslator`'s (the same as
    the Responses translator's), and:

    * ``finish()`` at upstream EOF: ends the message normally when a finish_reason was seen
      (a missing ``[DONE]`` is tolerated), else an ``api_error`` frame.
    * Choices other than index 0 (the gateway never asks for ``n > 1``) and events without
      data are ignored on purpose and counted in ``ignored_events``.
    * A stop sequence the server reports (vLLM ``stop_reason``) ends the message like one
      found in the text, with the upstream's usage.
    * Thinking blocks carry ``signature: ""`` and no ``signature_delta`` (from_chat).
    """

    def feed_many(self, events: Iterable[SSEEvent]) -> list[bytes]:
        """Translate upstream events in order; return the frames to write (possibly none).

        One loop for all the events of a read (issue 19): a chunk whose only change is text
        for the open text block, nearly every chunk of a stream, is handled inline; every
        other chunk by :meth:`_chunk`. Stops at the terminal frame: the events after it are
        not read (``feed`` would ignore them) nor counted."""
        out: list[bytes] = []
        if self.done:
            return out
        decode, dumps, delta_end = CHUNK_DECODER.decode, orjson.dumps, DELTA_END
        # The fast path's state, read again after any other chunk.
        fast, prefix = self._fast and self._finish_reason is None, self._prefix
        seen = 0
        for seen, event in enumerate(events, 1):  # noqa: B007 (read after the loop)
            try:
                chunk = decode(event.data)
            except msgspec.DecodeError as exc:
                self._undecoded(event, exc, out)
            else:
                choices = chunk.choices
                if fast and choices and len(choices) == 1 and not chunk.error:
                    choice = choices[0]
                    delta = choice.delta
                    if (
                        delta is not None
                        and type(delta.content) is str
                        and choice.index == 0
                        and choice.finish_reason is None
                        and delta.reasoning_content is None
                        and delta.reasoning is None
                        and delta.refusal is None
                        and delta.tool_calls is None
                        and delta.function_call is None
                    ):
                        # Hot path: text for the open text block, no stop sequences.
                        text = delta.content
                        if text:
                            self._out_chars += len(text)
                            out.append(prefix + dumps(text) + delta_end)
                        if chunk.service_tier is not None:
                            self._service_tier = chunk.service_tier
                        if chunk.usage:
                            self._upstream_usage = chunk.usage
                        continue
                self._chunk(chunk, out)
            if self.done:
                break
            fast, prefix = self._fast and self._finish_reason is None, self._prefix
        self.upstream_events += seen
        self.frames_out += len(out)
        return out

    def _chunk(self, chunk: Chunk, out: list[bytes]) -> None:
        """Any decoded chunk: starts the message, then its error, choices and usage."""
        if not self._started:
            if chunk.usage and isinstance(chunk.usage.get("prompt_tokens"), int):
                # Input usage before the first delta (vLLM's continuous usage stats): the
                # message_start can carry it (issue 15 item 5).
                self.input_tokens = usage_from_chat(chunk.usage).input_tokens
            self._start(out)
        if chunk.service_tier is not None:
            self._service_tier = chunk.service_tier
        if chunk.error:
            self._fail(chat_error(chunk.error), out)
            return
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

    def _undecoded(self, event: SSEEvent, exc: msgspec.DecodeError, out: list[bytes]) -> None:
        """An event that is no chunk: ``[DONE]``, a keep-alive, text that is not UTF-8 (read
        with U+FFFD, as the SSE standard decodes), or garbage (the stream fails)."""
        repaired = utf8_replaced(event.data)
        if repaired is not None:
            try:
                chunk = CHUNK_DECODER.decode(repaired)
            except msgspec.DecodeError as err:
                exc = err
            else:
                self._chunk(chunk, out)
                return
        if not self._started:
            self._start(out)
        data = event.data.strip()
        if data == b"[DONE]":
            self._conclude(out, _DONE_NO_FINISH)
        elif not data:
            self.ignored_events += 1  # a data-less event is a keep-alive
        else:
            self._fail(invalid_event("chunk", str(exc)), out)

    def _eof(self, out: list[bytes]) -> None:
        """The end of the message if a finish_reason came, else an error."""
        self._conclude(out, _NO_FINISH)

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
        set_service_tier(usage, self._service_tier)
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

    def _delta(self, delta: Delta, out: list[bytes]) -> None:
        reasoning = delta.reasoning_content or delta.reasoning
        if self._hold and (delta.tool_calls or delta.function_call):
            self._release_hold(out)  # a strict answer's text is complete: before the calls
            if self.done:
                return
        if self._scanner is not None and (
            (reasoning and self._thinking) or delta.tool_calls or delta.function_call
        ):
            # The text run ends here: text held back for a possible stop sequence goes out
            # before the next block, in the order from_chat gives.
            self._release_held(out)
        if reasoning and self._thinking:
            seg = self._think
            if seg is None or seg.state == DONE:
                seg = self._think = Seg(THINK)
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
            self._fragment(LEGACY, None, delta.function_call, out)
