"""Graceful shutdown of the real process (issue 5): SIGTERM stops accepting, lets in-flight
streams finish within the grace period, ends the rest with an overloaded_error event, exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.mock_upstream import Script, Text
from tests.anthropic_grammar import check_stream, parse_frames
from tests.conftest import Upstream

BODY = {
    "model": "claude-sonnet-5-5",
    "max_tokens": 100,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


async def start_gateway(
    upstream: Upstream, port: int, tmp_path: Path, grace: float, **extra_env: str
) -> asyncio.subprocess.Process:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "OPENAI_BASE_URL": upstream.url,
        "OPENAI_API_KEY": "sk-test",
        "GATEWAY_PORT": str(port),
        "GATEWAY_SHUTDOWN_GRACE": str(grace),
        "GATEWAY_SIGNING_KEY": "shutdown-test-signing-key-0123456789",
        "GATEWAY_MAX_ATTEMPTS": "1",
        "XDG_STATE_HOME": str(tmp_path),
        **extra_env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return proc
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError("gateway did not start")


@pytest.mark.parametrize(
    ("grace", "events", "expect_last"),
    [(5.0, 6, "message_stop"), (0.3, 40, "error")],
    ids=["finishes-within-grace", "ended-after-grace"],
)
async def test_sigterm_drains_streams(
    upstream: Upstream,
    unused_tcp_port: int,
    tmp_path: Path,
    grace: float,
    events: int,
    expect_last: str,
) -> None:
    words = " ".join(f"w{i}" for i in range(events))
    upstream.mock.enqueue(Script(items=[Text(words)], delay_between_events=0.1))
    proc = await start_gateway(upstream, unused_tcp_port, tmp_path, grace)
    url = f"http://127.0.0.1:{unused_tcp_port}/v1/messages"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=BODY) as r:
            assert r.status == 200
            first = await r.content.readuntil(b"\n\n")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rest = await r.content.read()
        took = time.monotonic() - t0
        frames = parse_frames(first + rest)
        check_stream(frames)
        assert frames[-1][0] == expect_last
        if expect_last == "error":
            assert frames[-1][1]["error"]["type"] == "overloaded_error"
            assert grace <= took < grace + 2.0
        # new connections are refused once shutdown began
        with pytest.raises(aiohttp.ClientConnectionError):
            async with s.post(url, json=BODY):
                pass
    assert await asyncio.wait_for(proc.wait(), timeout=15) == 0
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert "Traceback" not in stderr


async def test_readyz_turns_503_at_once_and_serving_goes_on_for_the_drain_delay(
    upstream: Upstream, unused_tcp_port: int, tmp_path: Path
) -> None:
    proc = await start_gateway(upstream, unused_tcp_port, tmp_path, 0.5, GATEWAY_DRAIN_DELAY="1.5")
    base = f"http://127.0.0.1:{unused_tcp_port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        async with s.get(base + "/readyz") as r:
            assert (r.status, (await r.json())["status"]) == (200, "ready")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        # a new connection is still accepted and served, but the balancer is told to go away
        async with s.get(base + "/readyz") as r:
            assert (r.status, (await r.json())["status"]) == (503, "draining")
        async with s.get(base + "/healthz") as r:
            assert r.status == 200 and (await r.json())["draining"] is True
        upstream.mock.enqueue(Script(items=[Text("still served")]))
        async with s.post(base + "/v1/messages", json={**BODY, "stream": False}) as r:
            assert r.status == 200
            assert (await r.json())["content"][0]["text"] == "still served"
        assert time.monotonic() - t0 < 1.5
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
        took = time.monotonic() - t0
        with pytest.raises(aiohttp.ClientConnectionError):
            async with s.get(base + "/readyz"):
                pass
    assert 1.5 <= took < 1.5 + 0.5 + 4
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert '"event":"gateway_draining"' in stderr
    assert '"event":"gateway_stopped"' in stderr
