"""Peers that misbehave on purpose: a client that stops reading, a client that trickles its
body, an upstream that accepts no connections. Raw sockets, so nothing in between is polite."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from aiohttp.test_utils import TestServer

from gateway.mock_upstream import Script, Text

#: 400 deltas of 32 KiB: ~13 MB of frames, far more than loopback's socket buffers hold.
BIG_CHUNK = "x" * 32 * 1024
BIG_STREAM_CHUNKS = 400


def big_stream() -> Script:
    """An upstream stream much larger than every buffer between the gateway and a client."""
    chunks = [BIG_CHUNK] * BIG_STREAM_CHUNKS
    return Script(items=[Text("".join(chunks), chunks=chunks)])


def http_request(path: str, payload: bytes, *, declared: int | None = None) -> bytes:
    """A raw HTTP/1.1 POST; ``declared`` overrides Content-Length (to trickle a body)."""
    length = len(payload) if declared is None else declared
    head = (
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    return head.encode() + payload


async def raw_connect(server: TestServer, *, rcvbuf: int | None = None) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Before connect, so the advertised window is small from the first segment.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    assert server.host is not None and server.port is not None
    await loop.sock_connect(sock, (server.host, server.port))
    return sock


@contextlib.asynccontextmanager
async def stuck_reader(
    server: TestServer, payload: dict[str, Any], path: str = "/v1/messages"
) -> AsyncIterator[socket.socket]:
    """Send a request, then never read a byte of the answer (until the block ends)."""
    sock = await raw_connect(server, rcvbuf=4096)
    try:
        await asyncio.get_running_loop().sock_sendall(
            sock, http_request(path, orjson.dumps(payload))
        )
        yield sock
    finally:
        sock.close()


async def read_http_response(sock: socket.socket, within: float) -> tuple[int, bytes]:
    """Read one whole HTTP response (Content-Length or close-delimited) from a raw socket."""
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(within):
        while b"\r\n\r\n" not in data:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while length is None or len(rest) < length:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                break
            rest += chunk
    return status, rest


async def connection_closed(sock: socket.socket, within: float) -> bool:
    """True when the peer closes (or resets) ``sock`` within ``within`` s; data is discarded."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(within):
            while True:
                if not await loop.sock_recv(sock, 1 << 20):
                    return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full: a connect to it neither succeeds nor fails."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    try:
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()
