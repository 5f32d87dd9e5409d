"""What the content of each Responses output item does: text, arguments, reasoning, the end
of an item (hosted-tool blocks, citations) and of the answer.

Pure: no aiohttp, no asyncio. :class:`ResponsesContent` adds the content to the item and block
state of :mod:`.items`; the event handlers (:mod:`.events`) call it. Mapping rules are the
non-streaming ones (:mod:`.response`, :mod:`.hosted`), so a streamed answer accumulates to the
same Message.
"""

from __future__ import annotations

from typing import Final

import msgspec

from ...anthropic.stop import stop_reason
from ...anthropic.stop_sequences import cut_at_stop_sequence
from ...anthropic.stream import (
    ARGS_FIRST,
    ARGS_LIVE,
    ARGS_WHOLE,
    DONE,
    OPEN,
    SERVER,
    TEXT,
    TOOL,
)
from ...anthropic.strict import strict_arguments
from ...anthropic.tools import tool_input_json
from ...anthropic.usage import set_service_tier
from ...errors import APIError
from ...schemas.openai_responses import (
    FunctionCallItem,
    MessageItem,
    OutputItem,
    ReasoningItem,
    Response,
    decode_item,
)
from ...sse_out import encode_event
from .hosted import HOSTED_ITEMS, citations, hosted_blocks, is_search
from .items import Item, ResponsesItems
from .response import final_usage, message_text, reasoning_text

__all__ = ["ResponsesContent"]

_EOF_MESSAGE: Final = "upstream closed the stream before the response completed"


class ResponsesContent(ResponsesItems):
    """The content handlers of one Responses stream (see the module docstring)."""

    def _eof(self, out: list[bytes]) -> None:
        """Without a terminal event, EOF is an error (§10 item 9)."""
        self._fail(APIError(_EOF_MESSAGE), out)

    def _terminal(self, resp: Response, out: list[bytes]) -> None:
        """response.completed / response.incomplete: finish every item, then end."""
        finals: dict[str, OutputItem] | None = None
        if not self._items and resp.output:
            # Nothing was announced item by item: build the blocks from the final output.
            for position, item in enumerate(_decode_items(resp.output)):
                if isinstance(item, ReasoningItem) and not self._thinking:
                    continue
                self._complete(self._item_for(item, position), out, item)
                if self.done:
                    return
        for it in list(self._items):
            if it.finished or it.state == DONE:
                continue
            if finals is None:
                finals = {i.id: i for i in _decode_items(resp.output) if i.id}
            self._complete(it, out, finals.get(it.item_id))
            if self.done:
                return
        incomplete = resp.incomplete_details.reason if resp.incomplete_details else None
        usage = final_usage(
            resp.usage,
            input_tokens=self.input_tokens,
            output_chars=self._out_chars,
            searches=self._searches,
        )
        set_service_tier(usage, resp.service_tier)
        reason = stop_reason(
            incomplete_reason=incomplete, refusal=self._refusal, tool_use=self._tool_blocks > 0
        )
        self._end(reason, usage, out)

    def _cite(self, it: Item, final: MessageItem, out: list[bytes]) -> None:
        """The message's url_citation annotations as ``citations_delta`` on its open text
        block (OpenAI sends them after the text they cover; the client's accumulator files
        them on the block either way)."""
        found = citations(final, self._signer, self._blocked)
        if not found:
            return
        if it.state != OPEN:
            self.ignored_events += 1  # the block closed earlier (interleaved items): no home
            return
        for citation in found:
            out.append(
                encode_event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": it.block,
                        "delta": {"type": "citations_delta", "citation": citation},
                    },
                )
            )

    def _text(self, it: Item, text: str, out: list[bytes]) -> None:
        """Visible text of a message item (stop sequences applied, §9.8)."""
        it.saw_delta = True
        if it.match is not None or it.finished:
            return
        if it.hold is not None:
            it.hold.append(text)
            return
        scanner = it.scanner
        if scanner is None:
            self._push(it, text, out)
            return
        safe, match = scanner.feed(text)
        if safe:
            self._push(it, safe, out)
        if match is not None and not self.done:
            it.match = match
            it.finished = True
            self._settle(it, out)

    def _cited(self, it: Item, text: str, out: list[bytes]) -> None:
        """A finished message whose sources are citable: its blocks, whole (issue 15)."""
        match = None
        if self._stop_sequences:
            text, match = cut_at_stop_sequence(text, self._stop_sequences)
        it.finished = True
        if not self._claim(it, out):  # a tool call still open: wait as plain text
            assert self._citations is not None
            it.pending.append("".join(b.text for b in self._citations.segments(text)))
            self._wait(it)
            return
        self._emit_cited(text, out)
        it.state = DONE
        if match is not None:
            self._stop_on_sequence(match, out)
        else:
            self._drain(out)

    def _args(self, it: Item, fragment: str, out: list[bytes]) -> None:
        """A function_call_arguments fragment (protocol.md §10 item 5)."""
        it.saw_delta = True
        if it.finished:
            return
        if it.args_mode == ARGS_LIVE:
            self._push(it, fragment, out)
        elif it.args_mode == ARGS_WHOLE:
            it.args_raw.append(fragment)
        else:
            fragment = fragment.lstrip()
            if not fragment:
                return
            if fragment[0] == "{":
                it.args_mode = ARGS_LIVE
                if it.state == OPEN:
                    self._set_open(it)  # enables the fast path
                self._push(it, fragment, out)
            else:
                # Not the start of a JSON object: the SDK would raise on it (§3.4 item 4).
                it.args_mode = ARGS_WHOLE
                it.args_raw.append(fragment)

    def _reasoning(self, it: Item, source: int, part: int, text: str, out: list[bytes]) -> None:
        """Summary (or raw reasoning) text; parts are separated by a blank line (§9.3)."""
        it.saw_delta = True
        if it.finished:
            return
        if it.source != source:
            if it.source >= 0:
                return  # one source per item, as from_responses.reasoning_text
            it.source = source
        key = (source, part)
        if it.part is not None and it.part != key:
            text = "\n\n" + text
        it.part = key
        it.has_text = True
        self._push(it, text, out)

    def _complete(self, it: Item, out: list[bytes], final: OutputItem | None) -> None:
        """The upstream finished ``it`` (``final`` = its finished form, if known)."""
        if it.finished or it.state == DONE:
            return
        if it.kind == TEXT:
            if not it.saw_delta and isinstance(final, MessageItem):
                text, refusal = message_text(final)
                self._refusal = self._refusal or refusal
                if text:
                    self._text(it, text, out)
                    if it.finished or self.done:
                        return
            restorer = self._strict.text()
            if it.hold is not None:
                held, it.hold = it.hold, None
                if self._citations is not None:
                    self._cited(it, "".join(held), out)
                    return
                if restorer is not None:
                    self._text(it, restorer.restore_text("".join(held)), out)
                if it.finished or self.done:
                    return
            if it.scanner is not None and it.match is None:
                tail = it.scanner.flush()
                if tail:
                    self._push(it, tail, out)
            if (
                isinstance(final, MessageItem)
                and it.match is None
                and restorer is None
                and not self.done
            ):
                self._cite(it, final, out)
        elif it.kind == SERVER:
            if isinstance(final, HOSTED_ITEMS):
                it.hosted = hosted_blocks(final, self._signer, self._blocked)
                self._searches += is_search(final)
        elif it.kind == TOOL:
            arguments: str | None = None
            if isinstance(final, FunctionCallItem):
                it.call_id = it.call_id or final.call_id
                it.name = it.name or final.name
                arguments = final.arguments
            if it.args_mode == ARGS_FIRST:
                arguments = strict_arguments(self._strict, it.name, arguments)
                self._push(it, tool_input_json(arguments), out)
            elif it.args_mode == ARGS_WHOLE:
                whole = arguments if arguments is not None else "".join(it.args_raw)
                self._push(it, tool_input_json(strict_arguments(self._strict, it.name, whole)), out)
        else:
            if isinstance(final, ReasoningItem):
                it.encrypted = final.encrypted_content
                if not it.saw_delta:
                    text = reasoning_text(final)
                    if text:
                        it.has_text = True
                        self._push(it, text, out)
        if self.done:
            return
        it.finished = True
        self._settle(it, out)


def _decode_items(raws: list[msgspec.Raw] | None) -> list[OutputItem]:
    items: list[OutputItem] = []
    for raw in raws or ():
        try:
            item = decode_item(raw)
        except msgspec.DecodeError:
            continue  # the stream already delivered what mattered; a bad copy is skipped
        if item is not None:
            items.append(item)
    return items
