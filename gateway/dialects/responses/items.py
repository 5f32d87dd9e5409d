"""The items of one Responses stream and what their content does to Anthropic blocks.

Pure: no aiohttp, no asyncio. :class:`ResponsesItems` is the state the event handlers
(:mod:`.events`) work on and :class:`~.stream.ResponsesStreamTranslator` dispatches to: the
output items by ``output_index``/``item_id``, their text, arguments and reasoning, and the end
of the answer. The lifecycle and block bookkeeping are :mod:`gateway.anthropic.stream`'s;
mapping rules are the non-streaming ones (:mod:`.response`), so a streamed answer accumulates to
the same Message.

Interleaving policy (§10 item 3). One block is open at a time. An upstream item whose content
arrives while another item's tool_use or thinking block is open is buffered and later flushed
as a whole block (start, one delta, stop if finished), in arrival order. A text block can be
closed at any point, so a text block gives way immediately when another item must start
(a continuation of that text later starts a new text block).
"""

from __future__ import annotations

import msgspec
import orjson

from ...anthropic.frames import (
    DELTA_END,
    DELTA_HEAD,
    DELTA_KIND,
    block_start_frame,
    block_stop_frame,
    signature_delta_frame,
)
from ...anthropic.stop_sequences import StopSequenceScanner
from ...anthropic.stream import (
    ARGS_FIRST,
    ARGS_LIVE,
    ARGS_WHOLE,
    DONE,
    OPEN,
    SERVER,
    TEXT,
    THINK,
    TOOL,
    WAITING,
    BaseStreamTranslator,
    Part,
)
from ...schemas.anthropic_out import OutBlock, OutCompaction, OutServerToolUse
from ...schemas.openai_responses import (
    FunctionCallItem,
    MessageItem,
    OutputItem,
)
from ...schemas.openai_responses_events import FunctionCallArgumentsDelta, OutputTextDelta
from ...sse_out import encode_event
from .hosted import HOSTED_ITEMS

__all__ = ["Item", "ResponsesItems"]


# Item kinds (anthropic.stream): a message item → TEXT, a function_call item → TOOL, a reasoning
# item → THINK (thinking, or redacted_thinking). Item states: anthropic.stream's; an item whose text
# block gave way is IDLE again (a continuation starts a new block).


class Item(Part):
    """One upstream output item and the state of the Anthropic block it maps to."""

    __slots__ = (
        "args_raw",
        "encrypted",
        "finished",
        "has_text",
        "hold",
        "hosted",
        "item_id",
        "match",
        "output_index",
        "part",
        "saw_delta",
        "scanner",
        "source",
    )

    def __init__(self, kind: int, output_index: int, item_id: str) -> None:
        super().__init__(kind)
        self.output_index = output_index
        self.item_id = item_id
        self.finished = False
        self.saw_delta = False
        # text
        self.scanner: StopSequenceScanner | None = None
        self.match: str | None = None
        #: a strict answer's text, held until the item is finished and restored whole
        self.hold: list[str] | None = None
        # tool_use
        self.args_raw: list[str] = []
        # thinking
        self.has_text = False
        self.part: tuple[int, int] | None = None
        self.source = -1
        self.encrypted: str | None = None
        # hosted tool: its blocks, once the item is finished
        self.hosted: list[OutBlock] = []


class ResponsesItems(BaseStreamTranslator[Item]):
    """The item and block state of one Responses stream (see the module docstring)."""

    def _init_state(self) -> None:
        self._items: list[Item] = []
        self._by_index: dict[int, Item] = {}
        self._by_id: dict[str, Item] = {}
        # The delta event class and output_index whose deltas take the fast path (the open
        # text block without stop sequences, the open tool block streaming its arguments
        # live), else None (an upstream can send any int; -1 means "absent" in the schema).
        self._fast_kind: type[OutputTextDelta | FunctionCallArgumentsDelta] | None = None
        self._fast_index: int | None = None
        self._searches = 0  # hosted web searches (usage.server_tool_use)

    # -----------------------------------------------------------------------------------------
    # Items

    def _find(self, output_index: int, item_id: str) -> Item | None:
        if output_index >= 0:
            it = self._by_index.get(output_index)
            if it is not None:
                return it
        if item_id or output_index < 0:
            # Neither key (a compat server without ids): all such deltas are one item.
            return self._by_id.get(item_id)
        return None

    def _register(self, kind: int, output_index: int, item_id: str) -> Item:
        it = Item(kind, output_index, item_id)
        if kind == TEXT:
            if self._stop_sequences:
                it.scanner = StopSequenceScanner(self._stop_sequences)
            if self._strict.text() is not None or self._citations is not None:
                it.hold = []
        self._items.append(it)
        if output_index >= 0:
            self._by_index[output_index] = it
        if item_id or output_index < 0:
            self._by_id[item_id] = it
        return it

    def _item_for(self, item: OutputItem, output_index: int) -> Item:
        """The Item for an announced item, registered on first sight."""
        item_id = item.id or ""
        it = self._find(output_index, item_id)
        if it is None:
            if isinstance(item, MessageItem):
                it = self._register(TEXT, output_index, item_id)
            elif isinstance(item, FunctionCallItem):
                it = self._register(TOOL, output_index, item_id)
            elif isinstance(item, HOSTED_ITEMS):
                it = self._register(SERVER, output_index, item_id)
            else:
                it = self._register(THINK, output_index, item_id)
        if isinstance(item, FunctionCallItem):
            # Also for a call first seen through its argument deltas (no name there, §7).
            it.call_id = it.call_id or item.call_id
            it.name = it.name or item.name
            if it.args_mode == ARGS_FIRST and self._strict.tool(it.name) is not None:
                it.args_mode = ARGS_WHOLE  # restored whole at the end
        return it

    def _set_open(self, it: Item | None) -> None:
        self._open = it
        self._fast_kind = self._fast_index = None
        if it is None:
            return
        self._prefix = it.prefix
        if it.output_index < 0:
            return
        if it.kind == TEXT and it.scanner is None:
            self._fast_kind, self._fast_index = OutputTextDelta, it.output_index
        elif it.kind == TOOL and it.args_mode == ARGS_LIVE:
            self._fast_kind, self._fast_index = FunctionCallArgumentsDelta, it.output_index

    # -----------------------------------------------------------------------------------------
    # Blocks (the bookkeeping is gateway.anthropic.stream's)

    def _closable(self, it: Item) -> bool:
        """Only a text block gives way (closed early); the others close when their item is
        finished upstream."""
        return it.kind == TEXT

    def _take_turn(self, it: Item, out: list[bytes]) -> None:
        if it.kind == SERVER:
            self._emit_hosted(it, out)
            return
        if it.pending or it.kind == TOOL:
            self._open_block(it, out)
        if it.finished:
            self._settle(it, out)

    def _close_block(self, it: Item, out: list[bytes]) -> None:
        """Stop ``it``'s open block (signature first for thinking, §3.2)."""
        if it.kind == THINK:
            signature = self._signer.encode(it.item_id, it.encrypted)
            out.append(signature_delta_frame(it.block, signature))
        super()._close_block(it, out)

    def _emit_redacted(self, it: Item, out: list[bytes]) -> None:
        index = self._take_index()
        data = self._signer.encode(it.item_id, it.encrypted)
        out.append(block_start_frame(index, {"type": "redacted_thinking", "data": data}))
        out.append(block_stop_frame(index))
        it.state = DONE

    def _emit_hosted(self, it: Item, out: list[bytes]) -> None:
        """A hosted-tool call's blocks, whole: a ``server_tool_use`` (or ``mcp_tool_use``)
        then its result. The ``server_tool_use`` input streams as one ``input_json_delta``,
        as Anthropic sends it (Claude Code reads the search query from it); results arrive
        whole in ``content_block_start``."""
        for block in it.hosted:
            index = self._take_index()
            doc = msgspec.to_builtins(block)
            if isinstance(block, OutCompaction):
                # start, one compaction_delta with everything, stop (as Anthropic streams it)
                out.append(block_start_frame(index, {**doc, "content": None,
                                                     "encrypted_content": None}))  # fmt: skip
                delta = {**doc, "type": "compaction_delta"}
                out.append(
                    encode_event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
            elif isinstance(block, OutServerToolUse):
                out.append(block_start_frame(index, {**doc, "input": {}}))
                partial = orjson.dumps(block.input).decode()
                out.append(
                    DELTA_HEAD
                    + str(index).encode()
                    + DELTA_KIND[TOOL]
                    + orjson.dumps(partial)
                    + DELTA_END
                )
            else:
                out.append(block_start_frame(index, doc))
            out.append(block_stop_frame(index))
        it.state = DONE
        if self.pause_after_compaction and any(isinstance(b, OutCompaction) for b in it.hosted):
            self._end("compaction", self._estimated_usage(), out)

    def _settle(self, it: Item, out: list[bytes]) -> None:
        """``it`` is finished upstream: close its block, or emit it whole, or wait."""
        if it.state == WAITING:
            return  # _drain settles it when its turn comes
        if it.state == OPEN:
            self._close_block(it, out)
            it.state = DONE
            if it.match is not None:
                self._stop_on_sequence(it.match, out)
                return
            self._drain(out)
            return
        # IDLE: nothing is buffered for it (that would make it open or waiting).
        if it.kind == SERVER:
            if not it.hosted:
                it.state = DONE
            elif self._claim(it, out):
                self._emit_hosted(it, out)
            elif not self.done:
                self._wait(it)
        elif it.kind == TEXT:
            if it.match is None:
                it.state = DONE
            elif self._open is None:
                it.state = DONE
                self._stop_on_sequence(it.match, out)
            else:
                self._wait(it)  # stop once the blocks before it are out
        elif it.kind == THINK:
            if it.encrypted is None:
                it.state = DONE
            elif self._claim(it, out):
                self._emit_redacted(it, out)
            elif not self.done:
                self._wait(it)
        else:
            if it.name is None:
                it.state = DONE  # a tool call without a name cannot be forwarded
            elif self._claim(it, out):
                self._open_block(it, out)
                self._settle(it, out)
            elif not self.done:
                self._wait(it)
