"""``--workers 2``: two processes answer on one port (issue 7 item 3)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp


async def test_two_workers_share_one_port(unused_tcp_port: int, tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "XDG_STATE_HOME": str(tmp_path),
        "GATEWAY_SHUTDOWN_GRACE": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "--mock",
        "--workers",
        "2",
        "--port",
        str(unused_tcp_port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{unused_tcp_port}"
    pids: set[int] = set()
    try:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as s:
            for _ in range(400):
                try:
                    async with s.get(base + "/healthz") as r:
                        pids.add((await r.json())["pid"])
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
                    continue
                if len(pids) == 2:
                    break
                await asyncio.sleep(0.01)
            assert len(pids) == 2, pids
            assert proc.pid not in pids  # the workers answer, not the manager
            body = {
                "model": "claude-haiku-5-5",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": "hi"}],
            }
            async with s.post(base + "/v1/messages", json=body) as r:
                assert r.status == 200
                assert (await r.json())["content"][0]["text"] == "echo: hi"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=30)
    assert code == 0
