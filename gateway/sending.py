"""Writing to clients, bounded: a client that takes no bytes is cut (issue 10 item 1).

``send_response`` writes a whole response under a stall check; :class:`StallCheck` tells a
stuck client from a slow one; ``reset_connection`` drops a connection at once. The relay's
watchdog uses the same check for streams."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Final

from aiohttp import web

from .context import RequestContext

try:  # the kernel's send queue per socket: Linux and the BSDs
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover - Windows
    _OUTQ = None


class StallCheck:
    """Tells a client that has taken no bytes for ``timeout`` seconds from one that is slow.

    A write stays blocked until the transport's buffer drains below its low-water mark, which
    for a large write to a slow reader can take long while bytes still flow; so progress is
    the buffer shrinking between two looks, and only a write with none for ``timeout`` seconds
    counts as stalled (issue 10 item 1).
    """

    __slots__ = ("_fd", "_size", "since", "timeout", "transport")

    def __init__(self, transport: asyncio.Transport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout
        self.since = 0.0
        self._size = -1
        sock = transport.get_extra_info("socket")
        self._fd: int = sock.fileno() if sock is not None and _OUTQ is not None else -1

    def begin(self, now: float) -> None:
        """A write starts blocking (or may): no progress seen yet."""
        self.since = now
        self._size = -1

    def stalled(self, now: float) -> bool:
        """Look at the buffer now; True when it has not shrunk for ``timeout`` seconds."""
        size = self.transport.get_write_buffer_size() + self._kernel_queue()
        if 0 <= size < self._size:
            self.since = now  # the client took bytes since the last look
        self._size = size
        return now - self.since >= self.timeout

    def _kernel_queue(self) -> int:
        # The kernel's send buffer holds megabytes and the socket turns writable only once a
        # third of it is free, so a slow reader drains it long before the transport's own
        # buffer moves: count the bytes the kernel still holds too (Linux SIOCOUTQ).
        if self._fd < 0 or _OUTQ is None:
            return 0
        try:
            raw = fcntl.ioctl(self._fd, _OUTQ, b"\0\0\0\0")
        except OSError:
            return 0
        queued: int = struct.unpack("i", raw)[0]
        return queued

    @property
    def period(self) -> float:
        """How often to look while a write is blocked."""
        return self.timeout / 4


#: a whole response this small is written without a stall check (the smallest high-water mark
#: of asyncio's and uvloop's transports is 64 KiB)
_NEVER_WAITS: Final = 16 * 1024


async def send_response(
    request: web.Request, resp: web.StreamResponse, send_timeout: float, ctx: RequestContext
) -> None:
    """Write a whole (not yet prepared) response, cutting a client that takes no bytes for
    ``send_timeout`` seconds (issue 10 item 1): one timer, no task, on the hot path; none for
    a small answer that cannot block."""
    transport = request.transport
    if transport is None:
        return
    body = resp.body if isinstance(resp, web.Response) else None
    if (
        isinstance(body, bytes)
        and len(body) <= _NEVER_WAITS
        and not transport.get_write_buffer_size()
    ):
        # Far below the transport's high-water mark, onto an empty buffer: the write cannot
        # pause, so nothing waits on the client and no stall check is needed (issue 19).
        await _write(request, resp, ctx)
        return
    loop = asyncio.get_running_loop()
    check = StallCheck(transport, send_timeout)
    check.begin(loop.time())
    handle: asyncio.TimerHandle | None = None

    def look() -> None:
        nonlocal handle
        now = loop.time()
        if check.stalled(now):
            ctx.outcome = "client_stalled"
            reset_connection(transport)
        else:
            handle = loop.call_at(now + check.period, look)

    handle = loop.call_at(loop.time() + check.period, look)
    try:
        await _write(request, resp, ctx)
    finally:
        handle.cancel()


async def _write(request: web.Request, resp: web.StreamResponse, ctx: RequestContext) -> None:
    try:
        await resp.prepare(request)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        ctx.outcome = ctx.outcome or "client_closed"


_LINGER_RESET: Final = struct.pack("ii", 1, 0)


def reset_connection(transport: asyncio.Transport) -> None:
    """Drop a client connection at once, with a TCP reset.

    ``abort()`` wakes a write blocked on the connection; SO_LINGER 0 makes the close a reset,
    so the kernel frees the megabytes still queued for a client that stopped reading instead
    of probing its zero window for as long as it answers.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()
