"""``python -m gateway`` as users start it (issue 11): fake answers only with ``--mock`` (said
loudly and truthfully), one line and exit 2 for anything wrong before listening, the
non-loopback and ephemeral-key warnings, ``--check-config`` and ``--help``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Upstream

PING = {
    "model": "claude-sonnet-5-5",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "ping"}],
}


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "XDG_STATE_HOME": str(tmp_path),
        **extra,
    }


async def run_gateway(
    args: list[str], env: dict[str, str], port: int
) -> tuple[str, dict[str, Any]]:
    """Start it, collect /healthz, /readyz, HEAD /api/hello and one answer, stop it (exit 0)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "--port", str(port), *args,
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    seen: dict[str, Any] = {}
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(200):
                try:
                    async with s.post(f"{base}/v1/messages", json=PING) as r:
                        seen["answer"] = await r.json()
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            async with s.get(f"{base}/healthz") as r:
                seen["healthz"] = (r.status, await r.json())
            async with s.get(f"{base}/readyz") as r:
                seen["readyz"] = (r.status, await r.json())
            async with s.head(f"{base}/api/hello") as r:
                seen["hello"] = r.status
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0
    return err.decode(), seen


async def refused(args: list[str], env: dict[str, str]) -> str:
    """Run it expecting a refusal: exit 2, one line on stderr, nothing served."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    text = err.decode()
    assert proc.returncode == 2, text
    assert out == b""
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("messages-gateway: ")
    assert "Traceback" not in text and "listening" not in text
    return lines[0]


async def test_no_key_refuses_to_start(tmp_path: Path, unused_tcp_port: int) -> None:
    line = await refused(["--port", str(unused_tcp_port)], base_env(tmp_path))
    assert line == (
        "messages-gateway: upstream 'default' needs OPENAI_API_KEY, which is not set: export "
        "it, or start with --mock to serve fake answers from the built-in mock upstream"
    )
    for off in ("0", "false"):
        line = await refused([], base_env(tmp_path, GATEWAY_MOCK=off))
        assert "needs OPENAI_API_KEY" in line


async def test_mock_only_when_asked_and_said_truthfully(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    stderr, seen = await run_gateway(["--mock"], base_env(tmp_path), unused_tcp_port)
    assert "FAKE answers" in stderr and "--mock" in stderr
    assert "no OPENAI_API_KEY" not in stderr
    assert seen["answer"]["content"] == [{"type": "text", "text": "echo: ping"}]
    assert seen["healthz"][0] == 200 and seen["healthz"][1]["mock"] is True
    assert seen["readyz"] == (
        200,
        {
            "status": "ready",
            "pid": seen["healthz"][1]["pid"],
            "mock": True,
            # the default routes' targets and the one upstream (issue 16); the mock needs no key
            "targets": {
                "default:gpt-5-mini": {"circuit": "closed", "failures": 0},
                "default:gpt-5": {"circuit": "closed", "failures": 0},
            },
            "upstreams": {"default": {"in_flight": 0}},
        },
    )
    assert seen["hello"] == 200
    assert (tmp_path / "messages-gateway" / "signing.key").stat().st_mode & 0o777 == 0o600
    # a key in the environment changes nothing about what the banner says
    env = base_env(tmp_path, OPENAI_API_KEY="sk-test", GATEWAY_MOCK="1")
    stderr, seen = await run_gateway([], env, unused_tcp_port)
    assert "FAKE answers" in stderr and "no OPENAI_API_KEY" not in stderr
    assert seen["answer"]["content"] == [{"type": "text", "text": "echo: ping"}]


async def test_keyless_local_route_needs_no_key_and_is_not_mocked(
    tmp_path: Path, unused_tcp_port: int, upstream: Upstream
) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(
        f'[upstreams.default]\nbase_url = "{upstream.url}"\ndialect = "chat"\napi_key_env = ""\n'
    )
    stderr, seen = await run_gateway(["--config", str(cfg)], base_env(tmp_path), unused_tcp_port)
    assert "FAKE" not in stderr
    assert seen["healthz"][1]["mock"] is False
    assert seen["answer"]["content"] == [{"type": "text", "text": "echo: ping"}]
    assert upstream.mock.requests[-1].path == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("toml", "extra_env", "expected"),
    [
        ('[upstreams.default]\ndialect = "chatty"\n', {},
         "bad setting upstreams.default.dialect = 'chatty': Invalid enum value 'chatty'"),
        ("[upstreams.default]\nmax_tokens_field = 5\n", {},
         "bad setting upstreams.default.max_tokens_field = 5: Expected `str`, got `int`"),
        ('[upstreams.default]\nheaders = {x-org = 1}\n', {},
         "bad setting upstreams.default.headers.x-org = 1: expected a string"),
        ("", {"GATEWAY_PORT": "abc"},
         "bad environment variable GATEWAY_PORT='abc': Expected `int`, got `str`"),
        ("", {"GATEWAY_API_KEYS_FILE": "/nonexistent/keys"},
         "GATEWAY_API_KEYS_FILE: '/nonexistent/keys' does not exist"),
        ("", {"GATEWAY_API_KEYS": " , "},
         "GATEWAY_API_KEYS is set but holds no key"),
        ("", {"GATEWAY_SIGNING_KEY": "short"},
         "GATEWAY_SIGNING_KEY: a key of 5 characters is too short (at least 32"),
    ],
    ids=["dialect", "field-type", "header-value", "port-env", "keys-file", "empty-keys",
         "short-signing-key"],
)  # fmt: skip
async def test_every_bad_setting_is_one_line(
    tmp_path: Path, toml: str, extra_env: dict[str, str], expected: str
) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(toml)
    env = base_env(tmp_path, OPENAI_API_KEY="sk-test", **extra_env)
    line = await refused(["--config", str(cfg)], env)
    assert expected in line


async def test_empty_keys_file_refuses(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# no keys yet\n\n")
    line = await refused(["--mock"], base_env(tmp_path, GATEWAY_API_KEYS_FILE=str(keys)))
    assert line.endswith(f"GATEWAY_API_KEYS_FILE: {str(keys)!r} holds no key")


async def test_port_in_use_is_said_before_listening(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        line = await refused(["--mock", "--port", str(port)], base_env(tmp_path))
    assert line == f"messages-gateway: cannot listen on 127.0.0.1:{port}: Address already in use"


async def test_check_config(tmp_path: Path, unused_tcp_port: int) -> None:
    env = base_env(tmp_path, OPENAI_API_KEY="sk-secret-CANARY", GATEWAY_API_KEYS="k1,k2")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "--check-config", "--port", str(unused_tcp_port),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err
    text = out.decode()
    assert "route *haiku* -> default:gpt-5-mini (responses, https://api.openai.com/v1)" in text
    assert "route * -> default:gpt-5 (responses, https://api.openai.com/v1)" in text
    assert "auth: 2 inbound key(s)" in text
    assert "configuration OK" in text
    assert "CANARY" not in text and "k1" not in text
    assert not (tmp_path / "messages-gateway").exists()  # checking writes nothing
    line = await refused(["--check-config"], base_env(tmp_path))
    assert "needs OPENAI_API_KEY" in line


async def test_help_reads_like_help() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "--help",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    text = out.decode()
    for needle in (
        "OPENAI_API_KEY", "GATEWAY_API_KEYS", "GATEWAY_SIGNING_KEY", "--mock", "--workers N",
        "--check-config", "--config FILE", "--log-level", "exit status",
    ):  # fmt: skip
        assert needle in text, needle


async def test_non_loopback_without_keys_warns(tmp_path: Path, unused_tcp_port: int) -> None:
    args = ["--mock", "--host", "0.0.0.0"]
    stderr, _ = await run_gateway(args, base_env(tmp_path), unused_tcp_port)
    assert "WARNING: listening on 0.0.0.0 without GATEWAY_API_KEYS" in stderr
    env = base_env(tmp_path, GATEWAY_API_KEYS="k1")
    stderr, seen = await run_gateway(args, env, unused_tcp_port)
    assert "WARNING" not in stderr
    assert seen["answer"]["error"]["type"] == "authentication_error"
    assert seen["hello"] == 200  # Claude Code's start-up probe needs no key


async def test_ephemeral_signing_key_warns(tmp_path: Path, unused_tcp_port: int) -> None:
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("a file where the state directory should be")
    stderr, seen = await run_gateway(["--mock"], base_env(not_a_dir), unused_tcp_port)
    assert "WARNING: GATEWAY_SIGNING_KEY is unset" in stderr
    assert "dies with this process" in stderr
    assert seen["answer"]["content"][0]["text"] == "echo: ping"


def test_serving_tunes_the_collector() -> None:
    # issue 19: what start-up built is frozen out of the collector's sight and young
    # collections are rarer once the gateway serves
    import gc

    from gateway.app import GC_YOUNG_THRESHOLD, tune_gc

    before = gc.get_threshold()
    try:
        gc.unfreeze()
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


_MALLOC_PROBE = """
import ctypes, sys
from gateway.app import tune_malloc

tuned = tune_malloc({}) if sys.argv[1] == "tuned" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)

def heap():
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            return tuple(int(x, 16) for x in line.split()[0].split("-"))
    return (0, 0)

blocks = [libc.malloc(100_000) for _ in range(30)]  # 3 MB at the heap's top
top = heap()[1]
for b in reversed(blocks):
    libc.free(b)
kept = heap()[1] - (top - 3_000_000)  # how much of it is still mapped
big = libc.malloc(900_000)
lo, hi = heap()
print(tuned, lo <= big < hi, kept >= 3_000_000)
"""


def test_serving_tunes_malloc() -> None:
    # issue 19: under 1 MiB a block comes from the heap, and up to 4 MiB left free at its top
    # stays mapped, so a process does not give memory back after each request only to fault it
    # in again on the next. The untuned run is the control: glibc's defaults do neither.
    import subprocess

    def probe(mode: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", _MALLOC_PROBE, mode],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        )
        return done.stdout.strip()

    tuned = probe("tuned")
    if tuned.startswith("False"):
        pytest.skip("not glibc: mallopt is not there")
    assert tuned == "True True True"
    assert probe("default") == "None False False"


def test_malloc_tuning_leaves_the_operators_choice() -> None:
    from gateway.app import tune_malloc

    assert tune_malloc({"MALLOC_TRIM_THRESHOLD_": "0"}) is False
    assert tune_malloc({"MALLOC_MMAP_THRESHOLD_": "65536"}) is False
