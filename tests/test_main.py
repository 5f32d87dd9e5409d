"""``python -m gateway`` as users start it: the mock banner without a key, the non-loopback
warning without inbound keys, a working answer from the built-in mock."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp


async def run_gateway(
    args: list[str], env: dict[str, str], port: int
) -> tuple[str, dict[str, object] | None]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "--port",
        str(port),
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    answer = None
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(200):
                try:
                    async with s.post(
                        f"http://127.0.0.1:{port}/v1/messages",
                        json={
                            "model": "claude-sonnet-5-5",
                            "max_tokens": 20,
                            "messages": [{"role": "user", "content": "ping"}],
                        },
                    ) as r:
                        answer = await r.json()
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0
    return err.decode(), answer


def base_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "XDG_STATE_HOME": str(tmp_path)}


async def test_no_key_serves_the_mock_loudly(tmp_path: Path, unused_tcp_port: int) -> None:
    stderr, answer = await run_gateway([], base_env(tmp_path), unused_tcp_port)
    assert "FAKE answers" in stderr and "no OPENAI_API_KEY is set" in stderr
    assert answer is not None
    assert answer["content"] == [{"type": "text", "text": "echo: ping"}]
    assert (tmp_path / "messages-gateway" / "signing.key").stat().st_mode & 0o777 == 0o600


async def test_non_loopback_without_keys_warns(tmp_path: Path, unused_tcp_port: int) -> None:
    stderr, _ = await run_gateway(["--host", "0.0.0.0"], base_env(tmp_path), unused_tcp_port)
    assert "WARNING: listening on 0.0.0.0 without GATEWAY_API_KEYS" in stderr
    env = {**base_env(tmp_path), "GATEWAY_API_KEYS": "k1"}
    stderr, answer = await run_gateway(["--host", "0.0.0.0"], env, unused_tcp_port)
    assert "WARNING" not in stderr
    assert answer is not None and answer["error"]["type"] == "authentication_error"  # type: ignore[index]
