"""SIGTERM ends the real process within ``shutdown_grace`` + a few seconds whatever its clients
do (issue 10 item 2): a client that stopped reading a stream is cut, a request still waiting
for upstream headers is answered 529 overloaded_error (clients retry it elsewhere)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path

import aiohttp
import orjson

from gateway.mock_upstream import Script, Text
from tests.conftest import Upstream
from tests.faults.support import big_stream, connection_closed, http_request
from tests.test_shutdown import BODY, start_gateway

GRACE = 1.0


async def test_sigterm_with_a_stuck_reader_and_a_waiting_request(
    upstream: Upstream, unused_tcp_port: int, tmp_path: Path
) -> None:
    upstream.mock.enqueue(
        big_stream(),
        Script(items=[Text("late")], delay_before_headers=60),
        Script(items=[Text("late")], delay_before_headers=60),
    )
    proc = await start_gateway(upstream, unused_tcp_port, tmp_path, GRACE)
    loop = asyncio.get_running_loop()
    stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.setblocking(False)
    try:
        await loop.sock_connect(stuck, ("127.0.0.1", unused_tcp_port))
        await loop.sock_sendall(stuck, http_request("/v1/messages", orjson.dumps(BODY)))
        await asyncio.sleep(1.0)  # the gateway is now blocked writing to it
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{unused_tcp_port}/v1/messages"
            waiting = [
                asyncio.create_task(s.post(url, json={**BODY, "stream": False})),
                # streamed, but the upstream has not answered: nothing was sent yet either
                asyncio.create_task(s.post(url, json=BODY)),
            ]
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            for task in waiting:
                resp = await asyncio.wait_for(task, GRACE + 3)
                assert resp.status == 529
                assert resp.headers["retry-after"] == "1"
                err = (await resp.json())["error"]
                assert err["type"] == "overloaded_error"
                assert "shutting down" in err["message"]
            answered = time.monotonic() - t0
            assert await connection_closed(stuck, GRACE + 3)
            rc = await asyncio.wait_for(proc.wait(), GRACE + 4)
        took = time.monotonic() - t0
    finally:
        stuck.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert rc == 0
    assert GRACE <= answered < GRACE + 2
    assert took < GRACE + 4
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert "Traceback" not in stderr
    ends = [json.loads(x) for x in stderr.splitlines() if '"request_end"' in x]
    ends = [e for e in ends if e["path"] == "/v1/messages"]
    # the server ended all three, and says so (not "client_closed")
    assert sorted((e["status"], e["outcome"]) for e in ends) == [
        (200, "shutdown"),
        (529, "shutdown"),
        (529, "shutdown"),
    ]
    assert all(e["level"] == "warning" for e in ends)
