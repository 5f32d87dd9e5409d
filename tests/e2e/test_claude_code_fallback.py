"""The real Claude Code CLI over a fallback chain whose primary is down (issue 16): the Write
round trip succeeds on the next target, and Claude Code never sees the failure."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from gateway.mock_upstream import FunctionCall, Reasoning, Script, Text
from tests.conftest import UPSTREAM_KEY_ENV, GatewayFactory, Upstream
from tests.e2e.test_claude_code import claude_env, install_claude_code
from tests.failover.conftest import dead_url


async def test_write_round_trip_when_the_primary_is_down(
    make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path, log_lines: list[str]
) -> None:
    gw = await make_gateway(
        upstreams={
            "down": {"base_url": dead_url(), "api_key_env": UPSTREAM_KEY_ENV},
            "default": {"base_url": upstream.url, "api_key_env": UPSTREAM_KEY_ENV,
                        "dialect": "chat"},
        },
        routes=[{"match": ["*"], "model": "gpt-5", "upstream": "down",
                 "fallbacks": [{"upstream": "default", "model": "local-model"}]}],
    )  # fmt: skip
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    target = work / "hello.txt"
    args = json.dumps({"file_path": str(target), "content": "hello over the fallback\n"})
    upstream.mock.enqueue(
        Script(items=[Reasoning(["Write it."]), Text("Creating it."),
                      FunctionCall("Write", args, call_id="call_w")]),
        Script(items=[Text("Created hello.txt.")]),
    )  # fmt: skip
    # any error would surface: no retries, so the gateway must absorb the dead primary
    env = claude_env(gw, home, CLAUDE_CODE_MAX_RETRIES="0")
    proc = await asyncio.create_subprocess_exec(
        str(install_claude_code()), "-p", "create a file hello.txt", "--output-format", "json",
        "--permission-mode", "acceptEdits", "--no-session-persistence",
        cwd=work, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    detail = f"stdout={out.decode()[-1500:]}\nstderr={err.decode()[-1500:]}"
    assert proc.returncode == 0, detail
    result: dict[str, Any] = json.loads(out)
    assert result["is_error"] is False, detail
    assert result["result"] == "Created hello.txt."
    assert target.read_text() == "hello over the fallback\n"
    sent = [r for r in upstream.mock.requests if r.path == "/v1/chat/completions"]
    assert [r.body["model"] for r in sent] == ["local-model", "local-model"]
    tools = [m for m in sent[1].body["messages"] if m["role"] == "tool"]
    assert [t["tool_call_id"] for t in tools] == ["call_w"]
    ends = [json.loads(x) for x in log_lines if '"request_end"' in x and "/v1/messages" in x]
    moved = [e for e in ends if e.get("target") == "default:local-model"]
    assert len(moved) >= 2
    assert all(e["fallbacks"] == "down:gpt-5:connect" and e["status"] == 200 for e in moved)
