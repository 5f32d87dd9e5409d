"""Byte-level faults: re-cut, CRLF, truncated and stalled bodies, and noticing a client that
left while the answer was stalled."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Final

from aiohttp import web

from .scripts import Script

# Poll interval while stalled: aiohttp does not cancel handlers on disconnect by default
# (handler_cancellation=False), so a stalled handler has to notice the lost transport itself.
DISCONNECT_POLL: Final = 0.01


def shape_writes(frames: Sequence[bytes], script: Script) -> list[bytes]:
    """Apply ``stall_after_events``, ``crlf``, ``drop_after_bytes`` and ``split`` to frames.

    The result is the list of ``write()`` calls; joined, it is a prefix of the full body.
    """
    if script.stall_after_events is not None:
        frames = frames[: script.stall_after_events]
    if script.crlf:
        # Safe: compact JSON never holds a raw newline, so every \n is a line end.
        frames = [f.replace(b"\n", b"\r\n") for f in frames]
    if script.split is None and script.drop_after_bytes is None:
        return list(frames)
    body = b"".join(frames)
    if script.drop_after_bytes is not None:
        body = body[: script.drop_after_bytes]
    if script.split is None:
        return [body] if body else []
    if isinstance(script.split, int):
        size = max(1, script.split)
        cuts = list(range(size, len(body), size))
    else:
        cuts = sorted(c for c in script.split if 0 < c < len(body))
    bounds = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]


async def wait_for_disconnect(request: web.BaseRequest) -> None:
    """Return once the client's transport is gone or closing."""
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(DISCONNECT_POLL)
