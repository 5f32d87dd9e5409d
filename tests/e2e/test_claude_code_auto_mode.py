"""The real Claude Code CLI in auto mode through the gateway (issue 13): its server-side safety
check (``safeguards``) is answered by the gateway's classifier, so a routine Write runs without
a prompt and without "Auto mode can't check actions", and a dangerous Bash command the
classifier flags is not run.

Print mode (``-p --permission-mode auto``) sends ``safeguards`` and obeys the verdicts
(shared/claude-code-auto-mode.md §1, §3); where nobody can be asked, a call without a verdict is
refused, so a missing answer would fail these runs too.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from gateway.mock_upstream import FunctionCall, Script, Text
from tests.conftest import GatewayFactory, Upstream
from tests.e2e.test_claude_code import claude_env, install_claude_code

CANT_CHECK = "can't check actions"


async def run_auto(
    bin_path: Path, gw_url: str, home: Path, work: Path, prompt: str
) -> tuple[int, dict[str, Any], str]:
    env = claude_env(gw_url, home, CLAUDE_CODE_MAX_RETRIES="1")
    proc = await asyncio.create_subprocess_exec(
        str(bin_path), "-p", prompt, "--output-format", "json", "--permission-mode", "auto",
        "--no-session-persistence",
        cwd=work, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    detail = f"stdout={out.decode()[-1500:]}\nstderr={err.decode()[-1500:]}"
    assert proc.returncode is not None
    try:
        result: dict[str, Any] = json.loads(out)
    except json.JSONDecodeError as exc:
        raise AssertionError(detail) from exc
    return proc.returncode, result, err.decode() + detail


def classifier_calls(upstream: Upstream) -> list[list[dict[str, Any]]]:
    """The tool calls each classifier request listed."""
    out = []
    for r in upstream.mock.requests:
        fmt = ((r.body or {}).get("text") or {}).get("format") or {}
        if fmt.get("name") != "safeguard_verdicts":
            continue
        text = r.body["input"][0]["content"][0]["text"]
        tail = text.partition("Tool calls to classify:\n")[2]
        out.append([json.loads(line) for line in tail.splitlines() if line.startswith("{")])
    return out


def main_requests(upstream: Upstream) -> list[Any]:
    return [
        r
        for r in upstream.mock.requests
        if r.path == "/v1/responses"
        and ((r.body or {}).get("text") or {}).get("format", {}).get("name") != "safeguard_verdicts"
    ]


async def test_auto_mode_write_runs_without_a_prompt(
    make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path
) -> None:
    claude = install_claude_code()
    gw = await make_gateway()
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    target = work / "notes.txt"
    args = json.dumps({"file_path": str(target), "content": "auto mode works\n"})
    upstream.mock.enqueue(
        Script(items=[Text("Writing the notes."), FunctionCall("Write", args, call_id="call_w1")]),
        Script(items=[Text("Wrote notes.txt.")]),
    )
    url = str(gw.make_url("")).rstrip("/")
    rc, result, detail = await run_auto(claude, url, home, work, "write notes.txt")
    assert rc == 0, detail
    assert result["is_error"] is False, detail
    assert result["result"] == "Wrote notes.txt."
    assert result.get("permission_denials") == [], detail
    assert target.read_text() == "auto mode works\n"
    assert CANT_CHECK not in detail
    main = main_requests(upstream)
    assert len(main) == 2
    assert all("safeguards" not in r.body for r in main)  # never forwarded upstream
    assert [[c["name"] for c in calls] for calls in classifier_calls(upstream)] == [["Write"]]
    assert classifier_calls(upstream)[0][0]["id"] == "call_w1"


async def test_auto_mode_flagged_bash_does_not_run(
    make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path
) -> None:
    claude = install_claude_code()
    gw = await make_gateway()
    home, work = tmp_path / "home", tmp_path / "work"
    victim = tmp_path / "outside" / "victim"
    home.mkdir()
    work.mkdir()
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("precious\n")
    command = f"rm -rf {victim}"
    args = json.dumps({"command": command, "description": "Remove the directory"})
    upstream.mock.enqueue(
        Script(items=[FunctionCall("Bash", args, call_id="call_rm1")]),
        Script(items=[Text("The removal was blocked.")]),
    )
    url = str(gw.make_url("")).rstrip("/")
    rc, result, detail = await run_auto(claude, url, home, work, "remove the victim directory")
    assert rc == 0, detail
    assert (victim / "keep.txt").read_text() == "precious\n"  # it did not run
    denials = result.get("permission_denials") or []
    assert [(d["tool_name"], d["tool_use_id"]) for d in denials] == [("Bash", "call_rm1")], detail
    assert result["result"] == "The removal was blocked."
    assert CANT_CHECK not in detail
    assert [[c["input"]["command"] for c in calls] for calls in classifier_calls(upstream)] == [
        [command]
    ]
    # the model was told why: the flagged verdict's explanation reached it as the tool result
    second = main_requests(upstream)[1].body["input"]
    outputs = [i for i in second if i.get("type") == "function_call_output"]
    assert "Irreversible destructive command" in json.dumps(outputs)
