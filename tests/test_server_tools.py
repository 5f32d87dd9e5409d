"""Anthropic server tools as the Responses API's hosted tools (issue 14): exact request JSON,
exact answers streamed and not (the SDK's accumulation of the stream equals the JSON answer),
the recorded web-search stream, history on the next turn, and routes that cannot host them."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp.test_utils import TestServer

from gateway.anthropic.server_tools import SEARCH_TOKEN
from gateway.anthropic.signatures import Signer
from gateway.config import load_settings
from gateway.dialects.responses.request import to_responses
from gateway.errors import InvalidRequestError
from gateway.mock_upstream import Citation, CodeRun, McpCall, Script, Text, WebSearch
from gateway.routing import resolve_routes
from gateway.schemas.anthropic import REQUEST_DECODER
from tests.anthropic_grammar import check_stream, parse_frames
from tests.conftest import SIGNING_KEY, GatewayFactory, Upstream
from tests.stream_support import BLOCK_KEYS

SIGNER = Signer(SIGNING_KEY)
MODEL = "claude-sonnet-5-5"
SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
WEATHER = {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}


def body(tools: list[Any], text: str = "search please", **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 500,
        "tools": tools,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def translate(doc: dict[str, Any]) -> dict[str, Any]:
    req = REQUEST_DECODER.decode(json.dumps(doc).encode())
    route = resolve_routes(load_settings(env={}), {})[1]
    return to_responses(req, route, SIGNER, stream=False)


async def post(gw: TestServer, doc: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(gw.make_url("/v1/messages"), json=doc) as r:
        raw = await r.read()
        return r.status, (json.loads(raw) if r.content_type == "application/json" else raw)


# ---------------------------------------------------------------------------------------------
# Request


def test_web_search_request() -> None:
    tool = {
        **SEARCH,
        "allowed_domains": ["docs.python.org", "peps.python.org"],
        "user_location": {"type": "approximate", "city": "Lyon", "country": "FR", "x": 1},
    }
    payload = translate(body([WEATHER, tool]))
    assert payload["tools"][1] == {
        "type": "web_search",
        "filters": {"allowed_domains": ["docs.python.org", "peps.python.org"]},
        "user_location": {"type": "approximate", "city": "Lyon", "country": "FR"},
    }
    assert payload["include"] == ["web_search_call.action.sources"]
    assert payload["max_tool_calls"] == 5


def test_code_execution_and_mcp_request() -> None:
    doc = body(
        [{"type": "code_execution_20250825", "name": "code_execution"}],
        mcp_servers=[
            {
                "type": "url",
                "url": "https://mcp.example.com/sse",
                "name": "wiki",
                "authorization_token": "tok",
                "tool_configuration": {"allowed_tools": ["ask"]},
            },
            {"type": "url", "url": "https://off.example", "name": "off",
             "tool_configuration": {"enabled": False}},
        ],
    )  # fmt: skip
    payload = translate(doc)
    assert payload["tools"] == [
        {"type": "code_interpreter", "container": {"type": "auto"}},
        {
            "type": "mcp",
            "server_label": "wiki",
            "server_url": "https://mcp.example.com/sse",
            "require_approval": "never",
            "authorization": "tok",
            "allowed_tools": ["ask"],
        },
    ]
    assert payload["include"] == ["code_interpreter_call.outputs"]
    assert "max_tool_calls" not in payload


def test_mcp_toolset_allow_list() -> None:
    servers = [{"type": "url", "url": "https://m.example", "name": "m"}]
    toolset = {
        "type": "mcp_toolset",
        "mcp_server_name": "m",
        "default_config": {"enabled": False},
        "configs": {"search": {"enabled": True}, "delete": {"enabled": False}},
    }
    payload = translate(body([toolset], mcp_servers=servers))
    assert payload["tools"] == [
        {
            "type": "mcp",
            "server_label": "m",
            "server_url": "https://m.example",
            "require_approval": "never",
            "allowed_tools": ["search"],
        }
    ]
    deny = {**toolset, "default_config": {"enabled": True}}
    with pytest.raises(InvalidRequestError, match="turning single tools off"):
        translate(body([deny], mcp_servers=servers))


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        ({"type": "web_fetch_20250910", "name": "web_fetch"}, "no hosted fetch"),
        ({"type": "tool_search_tool_regex_20251119", "name": "tool_search"}, "is not supported"),
        ({"type": "mcp_toolset", "mcp_server_name": "nope"}, "is not one of mcp_servers"),
    ],
)
def test_server_tools_that_cannot_be_served_are_a_400(tool: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message) as info:
        translate(body([tool]))
    assert info.value.message.startswith("tools.0")


# ---------------------------------------------------------------------------------------------
# Answers


def search_answer(blocked_source: bool = False) -> Script:
    sources = [("https://a.example.com/x", "A"), ("https://b.example.org/y", "B")]
    if blocked_source:
        sources.append(("https://ads.blocked.test/z", "Ad"))
    text = "See [A](https://a.example.com/x) and [B](https://b.example.org/y) now."
    return Script(
        items=[
            WebSearch("python news", sources, titles=True),
            WebSearch("python pep", [("https://peps.python.org/1", "PEP")], titles=True),
            Text(
                text,
                citations=[
                    Citation(4, 32, "https://a.example.com/x", "A"),
                    Citation(37, 65, "https://b.example.org/y", "B"),
                    Citation(0, 3, "https://ads.blocked.test/z", "Ad"),
                ],
            ),
        ]
    )


def result(url: str, title: str) -> dict[str, Any]:
    return {
        "type": "web_search_result",
        "url": url,
        "title": title,
        "encrypted_content": SIGNER.seal(SEARCH_TOKEN, {"u": url, "t": title}),
        "page_age": None,
    }


def citation(cited: str, url: str, title: str) -> dict[str, Any]:
    return {
        "type": "web_search_result_location",
        "cited_text": cited,
        "url": url,
        "title": title,
        "encrypted_index": SIGNER.seal(SEARCH_TOKEN, {"u": url, "t": title}),
    }


async def test_search_answer_exact(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(search_answer())
    status, doc = await post(gateway, body([SEARCH]))
    assert status == 200
    ws = [b["id"] for b in doc["content"] if b["type"] == "server_tool_use"]
    assert all(i.startswith("srvtoolu_") for i in ws) and len(set(ws)) == 2
    assert doc["content"] == [
        {"type": "server_tool_use", "id": ws[0], "name": "web_search",
         "input": {"query": "python news"}},
        {"type": "web_search_tool_result", "tool_use_id": ws[0],
         "content": [result("https://a.example.com/x", "A"),
                     result("https://b.example.org/y", "B")]},
        {"type": "server_tool_use", "id": ws[1], "name": "web_search",
         "input": {"query": "python pep"}},
        {"type": "web_search_tool_result", "tool_use_id": ws[1],
         "content": [result("https://peps.python.org/1", "PEP")]},
        {"type": "text",
         "text": "See [A](https://a.example.com/x) and [B](https://b.example.org/y) now.",
         "citations": [citation("[A](https://a.example.com/x)", "https://a.example.com/x", "A"),
                       citation("[B](https://b.example.org/y)", "https://b.example.org/y", "B"),
                       citation("See", "https://ads.blocked.test/z", "Ad")]},
    ]  # fmt: skip
    assert doc["stop_reason"] == "end_turn"
    assert doc["usage"]["server_tool_use"] == {"web_search_requests": 2, "web_fetch_requests": 0}
    sent = upstream.mock.requests[-1].body
    assert sent["tools"] == [{"type": "web_search"}] and sent["max_tool_calls"] == 5


async def test_blocked_domains_are_left_out(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(search_answer(blocked_source=True))
    tool = {**SEARCH, "blocked_domains": ["blocked.test"]}
    status, doc = await post(gateway, body([tool]))
    assert status == 200
    urls = [
        r["url"]
        for b in doc["content"]
        if b["type"] == "web_search_tool_result"
        for r in b["content"]
    ]
    assert urls == [
        "https://a.example.com/x",
        "https://b.example.org/y",
        "https://peps.python.org/1",
    ]
    cited = [c["url"] for c in doc["content"][-1]["citations"]]
    assert cited == ["https://a.example.com/x", "https://b.example.org/y"]
    assert "filters" not in upstream.mock.requests[-1].body["tools"][0]  # nothing to tell OpenAI


def comparable(content: list[Any]) -> list[dict[str, Any]]:
    """Blocks reduced to their keys, with ids numbered by first appearance
    (the JSON and the streamed answer come from two upstream calls)."""
    out = []
    ids: dict[str, str] = {}
    for block in content:
        doc = block if isinstance(block, dict) else block.model_dump()
        keys = BLOCK_KEYS[doc["type"]]
        kept = {k: doc.get(k) for k in keys if k != "citations" or doc.get(k)}
        for k in ("id", "tool_use_id"):
            if isinstance(kept.get(k), str):
                kept[k] = ids.setdefault(kept[k], f"id{len(ids)}")
        out.append(kept)
    return out


@pytest.mark.parametrize(
    "script",
    [
        search_answer(),
        Script(items=[CodeRun("print(6*7)", logs="42\n"), Text("It is 42.")]),
        Script(items=[WebSearch("q", [], status="failed"), Text("Search failed.")]),
    ],
    ids=["search", "code", "failed-search"],
)
async def test_stream_accumulates_to_the_json_answer(
    gateway: TestServer, upstream: Upstream, script: Script
) -> None:
    tools = [SEARCH, {"type": "code_execution_20250522", "name": "code_execution"}]
    upstream.mock.enqueue(script)
    _, whole = await post(gateway, body(tools))
    upstream.mock.enqueue(script)
    async with (
        aiohttp.ClientSession() as s,
        s.post(gateway.make_url("/v1/messages"), json={**body(tools), "stream": True}) as r,
    ):
        raw = await r.read()
    events = parse_frames(raw)
    check_stream(events)
    client = anthropic.AsyncAnthropic(
        base_url=str(gateway.make_url("")), api_key="k", max_retries=0
    )
    upstream.mock.enqueue(script)
    async with client.messages.stream(**body(tools)) as stream:
        final = await stream.get_final_message()
    await client.close()
    assert comparable(final.content) == comparable(whole["content"])
    assert final.usage.server_tool_use == (
        None if "server_tool_use" not in whole["usage"] else final.usage.server_tool_use
    )
    # the search query streams as the server_tool_use's input_json_delta (Claude Code reads it)
    starts = [d for e, d in events if e == "content_block_start"]
    kinds = [s["content_block"]["type"] for s in starts]
    assert kinds == [b["type"] for b in whole["content"]]


async def test_code_and_mcp_blocks(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(
        Script(
            items=[
                CodeRun("print(6*7)", logs="42\n"),
                McpCall("wiki", "ask", '{"q": "x"}', output="an answer"),
                McpCall("wiki", "ask", '{"q": "y"}', error="boom"),
                Text("Done."),
            ]
        )
    )
    servers = [{"type": "url", "url": "https://m.example", "name": "wiki"}]
    tools = [{"type": "code_execution_20250522", "name": "code_execution"}]
    status, doc = await post(gateway, body(tools, mcp_servers=servers))
    assert status == 200
    code_id, mcp_ok, mcp_bad = (doc["content"][i]["id"] for i in (0, 2, 4))
    assert doc["content"][:6] == [
        {"type": "server_tool_use", "id": code_id, "name": "code_execution",
         "input": {"code": "print(6*7)"}},
        {"type": "code_execution_tool_result", "tool_use_id": code_id,
         "content": {"type": "code_execution_result", "stdout": "42\n", "stderr": "",
                     "return_code": 0, "content": []}},
        {"type": "mcp_tool_use", "id": mcp_ok, "name": "ask", "server_name": "wiki",
         "input": {"q": "x"}},
        {"type": "mcp_tool_result", "tool_use_id": mcp_ok, "is_error": False,
         "content": [{"type": "text", "text": "an answer"}]},
        {"type": "mcp_tool_use", "id": mcp_bad, "name": "ask", "server_name": "wiki",
         "input": {"q": "y"}},
        {"type": "mcp_tool_result", "tool_use_id": mcp_bad, "is_error": True,
         "content": [{"type": "text", "text": "boom"}]},
    ]  # fmt: skip
    assert code_id.startswith("srvtoolu_") and mcp_ok.startswith("mcptoolu_")


# ---------------------------------------------------------------------------------------------
# The recorded web-search stream (gpt-5.2, shared/corpus)


def test_recorded_web_search_stream() -> None:
    from tests.test_stream_responses import CORPUS, corpus_body
    from tests.test_stream_responses import translate as run

    path = CORPUS / "responses-stream-web-search-annotations.json"
    if not path.exists():
        pytest.skip("corpus not present")
    frames, _ = run(corpus_body(path), thinking=False)
    events = parse_frames(b"".join(frames))
    check_stream(events)
    starts = [d["content_block"] for e, d in events if e == "content_block_start"]
    assert [s["type"] for s in starts] == [
        "server_tool_use", "web_search_tool_result", "server_tool_use", "web_search_tool_result",
        "text",
    ]  # fmt: skip
    queries = [
        json.loads(d["delta"]["partial_json"])["query"]
        for e, d in events
        if e == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    ]
    assert len(queries) == 2 and queries[0].startswith("tallest mountain in Alberta")
    assert [s["content"] for s in starts if s["type"] == "web_search_tool_result"] == [[], []]
    cites = [
        d["delta"]["citation"]
        for e, d in events
        if e == "content_block_delta" and d["delta"]["type"] == "citations_delta"
    ]
    assert [c["url"] for c in cites] == [
        "https://www.britannica.com/place/Mount-Columbia?utm_source=openai"
    ]
    assert cites[0]["cited_text"] == (
        "([britannica.com](https://www.britannica.com/place/Mount-Columbia?utm_source=openai))"
    )
    delta = next(d for e, d in events if e == "message_delta")
    assert delta["usage"]["server_tool_use"] == {"web_search_requests": 2, "web_fetch_requests": 0}
    assert delta["delta"]["stop_reason"] == "end_turn"


# ---------------------------------------------------------------------------------------------
# History


async def test_next_turn_sees_the_search_as_text(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(search_answer())
    _, first = await post(gateway, body([SEARCH]))
    upstream.mock.enqueue(Script(items=[Text("ok")]))
    doc = body([SEARCH])
    doc["messages"] += [
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": "thanks"},
    ]
    status, _ = await post(gateway, doc)
    assert status == 200
    sent = upstream.mock.requests[-1].body["input"]
    assistant = [i for i in sent if i.get("role") == "assistant"]
    texts = [p["text"] for a in assistant for p in a["content"]]
    assert texts[:2] == [
        '[web_search {"query":"python news"}]',
        "Search results:\n- A: https://a.example.com/x\n- B: https://b.example.org/y",
    ]
    assert texts[-1].startswith("See [A]")
    assert not any(i.get("type") == "web_search_call" for i in sent)


# ---------------------------------------------------------------------------------------------
# Routes that cannot host them


@pytest.mark.parametrize("how", ["chat", "hosted_tools-off"])
async def test_unhosted_search_reports_unavailable(
    make_gateway: GatewayFactory, upstream: Upstream, how: str
) -> None:
    if how == "chat":
        chat = {"base_url": upstream.url, "api_key_env": "TEST_UPSTREAM_KEY", "dialect": "chat"}
        gw = await make_gateway(upstreams={"default": chat})
    else:
        gw = await make_gateway(routes=[{"match": ["*"], "model": "big", "hosted_tools": False}])
    doc = body([SEARCH], text="Perform a web search for the query: tallest mountain")
    status, answer = await post(gw, doc)
    assert status == 200
    tool_id = answer["content"][0]["id"]
    assert answer["content"] == [
        {"type": "server_tool_use", "id": tool_id, "name": "web_search",
         "input": {"query": "tallest mountain"}},
        {"type": "web_search_tool_result", "tool_use_id": tool_id,
         "content": {"type": "web_search_tool_result_error", "error_code": "unavailable"}},
        {"type": "text",
         "text": "Web search is not available through this gateway route, so it did not run."},
    ]  # fmt: skip
    assert answer["stop_reason"] == "end_turn"
    assert upstream.mock.requests == []  # nothing was asked of a model that cannot search
    client = anthropic.AsyncAnthropic(base_url=str(gw.make_url("")), api_key="k", max_retries=0)
    async with client.messages.stream(**doc) as stream:
        final = await stream.get_final_message()
    await client.close()
    assert comparable(final.content)[1:] == comparable(answer["content"])[1:]
    # with tools of its own too, it cannot be answered without the search: a 400
    status, err = await post(gw, body([WEATHER, SEARCH]))
    assert status == 400
    assert err["error"]["message"].startswith(
        "tools.1: web_search_20250305 (web_search) needs an upstream that hosts it"
    )
