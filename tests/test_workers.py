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
        if proc.returncode is None:  # a manager that exited early must not hide why
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=30)
    assert code == 0


def _total(metrics: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


async def test_metrics_sum_every_worker(unused_tcp_port: int, tmp_path: Path) -> None:
    """Issue 11 item 8: whichever worker answers /metrics, the counters count every worker's
    requests, and they never go down."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "XDG_STATE_HOME": str(tmp_path),
        "GATEWAY_SHUTDOWN_GRACE": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "--mock", "--workers", "2",
        "--port", str(unused_tcp_port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{unused_tcp_port}"
    body = {
        "model": "claude-haiku-5-5",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    sessions: list[aiohttp.ClientSession] = []
    try:
        # one kept-alive connection per worker: /healthz on it tells which worker holds it
        by_pid: dict[int, aiohttp.ClientSession] = {}
        for _ in range(400):
            s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            sessions.append(s)
            try:
                async with s.get(base + "/healthz") as r:
                    by_pid.setdefault((await r.json())["pid"], s)
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
            if len(by_pid) == 2:
                break
        assert len(by_pid) == 2, by_pid
        for s in by_pid.values():
            for _ in range(10):
                async with s.post(base + "/v1/messages", json=body) as r:
                    assert r.status == 200
        seen = []
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)
        ) as scraper:
            for _ in range(10):
                async with scraper.get(base + "/metrics") as r:
                    text = await r.text()
                seen.append(_total(text, "gateway_requests_total"))
                assert _total(text, "gateway_in_flight_requests") == 0
                assert _total(text, "gateway_open_streams") == 0
        assert seen == [20.0] * 10
    finally:
        for s in sessions:
            await s.close()
        if proc.returncode is None:  # a manager that exited early must not hide why
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=30)
    assert code == 0
