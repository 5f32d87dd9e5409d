"""The parts of an upstream answer and the states of the blocks they map to (the vocabulary
of :mod:`.stream`, which re-exports it).

Pure: no aiohttp, no asyncio.
"""

from __future__ import annotations

from typing import Final

# Part kinds: the Anthropic block a part maps to. Values index DELTA_KIND.
TEXT: Final = 0
TOOL: Final = 1
THINK: Final = 2
#: a hosted-tool call (web search, code execution, MCP): whole blocks, emitted when finished
SERVER: Final = 3

# Part states.
IDLE: Final = 0  # no block open: nothing to show yet, or its block gave way
OPEN: Final = 1  # owns the one open block
WAITING: Final = 2  # has content but another block is open; in the waiting queue
DONE: Final = 3  # finished and fully emitted (or dropped)

# Tool argument modes.
ARGS_FIRST: Final = 0  # nothing but whitespace seen yet
ARGS_LIVE: Final = 1  # began with "{": fragments are forwarded as they come
ARGS_WHOLE: Final = 2  # began with something else: buffered, sent normalised at the end


class Part:
    """One unit of upstream content and the state of the Anthropic block it maps to."""

    __slots__ = ("args_mode", "block", "call_id", "kind", "name", "pending", "prefix", "state")

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.state = IDLE
        self.block = -1
        #: DELTA_HEAD + index + delta kind, once the block is open
        self.prefix = b""
        #: fragments waiting for this part's turn
        self.pending: list[str] = []
        # tool_use
        self.call_id: str | None = None
        self.name: str | None = None
        self.args_mode = ARGS_FIRST
