"""The real Claude Code CLI's WebSearch tool through the gateway (issue 14).

Claude Code runs WebSearch as a sub-request of its own: a fresh ``/v1/messages`` call whose only
tool is the server tool ``web_search_20250305`` and whose user message is "Perform a web search
for the query: …"; it reads the ``server_tool_use``/``web_search_tool_result`` blocks and the
cited text of the answer into the tool result it gives the main model.

On a Responses route the gateway hands the search to the upstream's hosted ``web_search`` (the
mock's default search answers it with two links); on a Chat Completions route nothing can host
it, so the search reports itself unavailable and no links are invented.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from pathlib import Path
from typing import Any

from gateway.mock_upstream import FunctionCall, Script, Text
from tests.conftest import GatewayFactory, Upstream
from tests.e2e.test_claude_code import claude_env, install_claude_code

QUERY = "python 3.14 release notes"
DOCS = "https://docs.example.com/python-3-14-release-notes"
NEWS = "https://news.example.org/python-3-14-release-notes"


async def run_search(gw_url: str, home: Path, work: Path) -> tuple[list[dict[str, Any]], str]:
    """One print-mode run; the stream-json events it printed."""
    # WebSearch offered inline, not behind ToolSearch
    env = claude_env(gw_url, home, CLAUDE_CODE_MAX_RETRIES="1", ENABLE_TOOL_SEARCH="false")
    proc = await asyncio.create_subprocess_exec(
        str(install_claude_code()), "-p", f"search the web for {QUERY}",
        "--output-format", "stream-json", "--verbose", "--allowedTools", "WebSearch",
        "--no-session-persistence",
        cwd=work, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    detail = f"rc={proc.returncode}\nstdout={out.decode()[-3000:]}\nstderr={err.decode()[-1500:]}"
    assert proc.returncode == 0, detail
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    return events, detail


def tool_results(events: list[dict[str, Any]]) -> list[str]:
    """The text of each tool_result Claude Code gave its main model."""
    out = []
    for ev in events:
        if ev.get("type") != "user":
            continue
        for block in ev["message"]["content"]:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                content = block.get("content")
                if isinstance(content, list):
                    content = "".join(c.get("text", "") for c in content)
                out.append(str(content))
    return out


def script_turns() -> tuple[Script, Script]:
    args = json.dumps({"query": QUERY})
    return (
        Script(items=[FunctionCall("WebSearch", args, call_id="call_ws1")]),
        Script(items=[Text("Summarised the search.")]),
    )


def result_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(ev for ev in events if ev.get("type") == "result")


async def test_web_search_on_a_responses_route(
    make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path
) -> None:
    gw = await make_gateway()
    (home := tmp_path / "home").mkdir()
    (work := tmp_path / "work").mkdir()
    upstream.mock.search_queue = deque()  # searches get the mock's default two-link answer
    upstream.mock.enqueue(*script_turns())
    events, detail = await run_search(str(gw.make_url("")).rstrip("/"), home, work)
    assert result_of(events)["result"] == "Summarised the search.", detail
    assert upstream.mock.pending == 0
    sent = [r.body for r in upstream.mock.requests]
    assert [r.path for r in upstream.mock.requests] == ["/v1/responses"] * 3
    # the sub-request: only the hosted search, the query as Claude Code worded it
    search = sent[1]
    assert search["tools"] == [{"type": "web_search"}]
    assert search["max_tool_calls"] == 8  # the tool's max_uses
    assert "web_search_call.action.sources" in search["include"]
    assert search["input"][-1]["content"][0]["text"] == (
        f"Perform a web search for the query: {QUERY}"
    )
    # Claude Code read both links and the cited answer into its tool result
    [text] = tool_results(events)
    assert text.startswith(f'Web search results for query: "{QUERY}"')
    links = json.loads(text.partition("Links: ")[2].partition("\n")[0])
    assert [link["url"] for link in links] == [DOCS, NEWS]
    assert f"[the docs]({DOCS}) and [the news]({NEWS})" in text
    # … and that tool result is what the main model saw on its next turn
    outputs = [i for i in sent[2]["input"] if i.get("type") == "function_call_output"]
    assert [o["call_id"] for o in outputs] == ["call_ws1"]
    assert DOCS in json.dumps(outputs) and NEWS in json.dumps(outputs)


async def test_web_search_on_a_chat_route(
    make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path
) -> None:
    gw = await make_gateway(upstreams={"default": {"base_url": upstream.url, "dialect": "chat"}})
    (home := tmp_path / "home").mkdir()
    (work := tmp_path / "work").mkdir()
    upstream.mock.enqueue(*script_turns())
    events, detail = await run_search(str(gw.make_url("")).rstrip("/"), home, work)
    assert result_of(events)["result"] == "Summarised the search.", detail
    # the search never went upstream (nothing there can host it): only the two main turns did
    assert [r.path for r in upstream.mock.requests] == ["/v1/chat/completions"] * 2
    [text] = tool_results(events)
    assert "Web search error: unavailable" in text
    assert "not available through this gateway route" in text
    assert "http" not in text  # no links made up
