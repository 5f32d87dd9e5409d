"""The real Claude Code CLI through the gateway (issue 4): a streamed Write tool call, the
file on disk, the tool result back upstream, no non-streaming fallback.

The CLI is installed with npm (pinned version) into ``.cache/claude-code``. Where it cannot be
installed this test FAILS: a gateway whose Claude Code path is unproven must not look green.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.mock_upstream import FunctionCall, Reasoning, Script, Text
from tests.conftest import GatewayFactory, Upstream

CLAUDE_CODE_VERSION = "2.1.330"
ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CLAUDE_CODE_CACHE", ROOT / ".cache" / "claude-code"))
BIN = CACHE / "node_modules" / ".bin" / "claude"


def install_claude_code() -> Path:
    """The pinned CLI, installed on first use; raises (never skips) when that is impossible."""
    if BIN.exists():
        probe = subprocess.run([str(BIN), "--version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0 and CLAUDE_CODE_VERSION in probe.stdout:
            return BIN
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: cannot install the Claude Code CLI for e2e")
    CACHE.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(CACHE),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"npm install of Claude Code failed:\n{proc.stderr[-2000:]}")
    exe = CACHE / "node_modules" / "@anthropic-ai" / "claude-code" / "bin" / "claude.exe"
    native = CACHE / "node_modules" / "@anthropic-ai" / "claude-code-linux-x64" / "claude"
    if native.exists() and (not exe.exists() or exe.stat().st_size < 1_000_000):
        # postinstall normally links the platform binary over the placeholder (claude-code.md §1)
        exe.unlink(missing_ok=True)
        os.link(native, exe)
        exe.chmod(0o755)
    return BIN


@pytest.fixture(scope="module")
def claude_bin() -> Path:
    return install_claude_code()


def claude_env(gw: Any, home: Path, **extra: str) -> dict[str, str]:
    """Claude Code's environment for a run against the gateway ``gw`` (a TestServer, or its
    base URL)."""
    url = gw if isinstance(gw, str) else str(gw.make_url("")).rstrip("/")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "sk-ant-e2e",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "2",
        "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1",
        **extra,
    }


CLASSIC = {
    "CLAUDE_CODE_MODEL_CAPABILITIES": "-mid_conv_system,-per_turn_effort",
    "ENABLE_TOOL_SEARCH": "false",
}


@pytest.mark.parametrize(
    ("shape", "dialect"),
    [("default", "responses"), ("classic", "responses"), ("default", "chat")],
)
async def test_claude_code_write_tool_round_trip(
    claude_bin: Path,
    make_gateway: GatewayFactory,
    upstream: Upstream,
    tmp_path: Path,
    shape: str,
    dialect: str,
) -> None:
    gw = await make_gateway(upstreams={"default": {"base_url": upstream.url, "dialect": dialect}})
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    target = work / "hello.txt"
    args = json.dumps({"file_path": str(target), "content": "hello from the gateway\n"})
    upstream.mock.enqueue(
        Script(
            items=[
                Reasoning(["The user wants a file; use Write."], encrypted_content="enc-turn-1"),
                Text("I'll create the file."),
                FunctionCall("Write", args, call_id="call_write_1"),
            ]
        ),
        Script(items=[Text("Created hello.txt for you.")]),
    )
    env = claude_env(gw, home, **(CLASSIC if shape == "classic" else {}))
    proc = await asyncio.create_subprocess_exec(
        str(claude_bin),
        "-p",
        "create a file hello.txt",
        "--output-format",
        "json",
        "--permission-mode",
        "acceptEdits",
        "--no-session-persistence",
        cwd=work,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    detail = f"stdout={out.decode()[-1500:]}\nstderr={err.decode()[-1500:]}"
    assert proc.returncode == 0, detail
    result: dict[str, Any] = json.loads(out)
    assert result["is_error"] is False, detail
    assert result["result"] == "Created hello.txt for you."
    assert result["num_turns"] == 2
    assert target.read_text() == "hello from the gateway\n"

    if dialect == "chat":
        check_chat_upstream(upstream, args)
        return
    sent = [r for r in upstream.mock.requests if r.path == "/v1/responses"]
    assert len(sent) == 2, [r.body.get("stream") for r in sent]
    assert all(r.body["stream"] is True for r in sent)  # no non-streaming fallback
    second = sent[1].body["input"]
    calls = [i for i in second if i.get("type") == "function_call"]
    outputs = [i for i in second if i.get("type") == "function_call_output"]
    assert [c["call_id"] for c in calls] == ["call_write_1"]
    assert [o["call_id"] for o in outputs] == ["call_write_1"]
    assert calls[0]["name"] == "Write"
    assert json.loads(calls[0]["arguments"]) == json.loads(args)
    # the thinking block Claude Code echoed back became the same reasoning item again
    reasoning = [i for i in second if i.get("type") == "reasoning"]
    assert [r["encrypted_content"] for r in reasoning] == ["enc-turn-1"]
    assert second.index(reasoning[0]) < second.index(calls[0])
    # Claude Code's volatile billing header never reaches the upstream
    assert "x-anthropic-billing-header" not in (sent[0].body.get("instructions") or "")
    if shape == "default":
        assert any(i.get("role") == "developer" for i in sent[0].body["input"])
    assert sent[0].body["prompt_cache_key"] == sent[1].body["prompt_cache_key"]


def check_chat_upstream(upstream: Upstream, args: str) -> None:
    """The same round trip over Chat Completions: tool_calls, then a matching tool message."""
    sent = [r for r in upstream.mock.requests if r.path == "/v1/chat/completions"]
    assert len(sent) == 2
    assert all(r.body["stream"] is True for r in sent)  # no non-streaming fallback
    messages = sent[1].body["messages"]
    calls = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    tools = [m for m in messages if m["role"] == "tool"]
    assert [c["id"] for c in calls] == ["call_write_1"]
    assert json.loads(calls[0]["function"]["arguments"]) == json.loads(args)
    assert [t["tool_call_id"] for t in tools] == ["call_write_1"]
    assert all("x-anthropic-billing-header" not in str(m["content"]) for m in messages)
