"""Citations on documents and search results, emulated (issue 15 item 7): sources labelled
and the instruction given upstream, quotes found in their sources and returned as cited text
blocks (exact spans), streamed as Anthropic streams them, over both dialects; the 400s."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp.test_utils import TestServer

from gateway.anthropic.citations import INSTRUCTION
from gateway.mock_upstream import Script, Text
from tests.anthropic_grammar import check_stream, parse_frames
from tests.conftest import GatewayFactory, Upstream

MODEL = "claude-sonnet-5-5"
DOC = "The grass is green. The sky is blue. Water is wet."
ON = {"enabled": True}


def document(**kw: Any) -> dict[str, Any]:
    return {"type": "document", "title": "Facts", "citations": ON,
            "source": {"type": "text", "media_type": "text/plain", "data": DOC}, **kw}  # fmt: skip


def ask(*blocks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    content = [*blocks, {"type": "text", "text": "What colour is the sky?"}]
    return {"model": MODEL, "max_tokens": 200, **extra,
            "messages": [{"role": "user", "content": content}]}  # fmt: skip


ANSWER = (
    'Look: <cite source="document 0">The sky is  blue.</cite> And '
    '<cite source="document 7">made up</cite> too.'
)
EXPECTED = [
    {"type": "text", "text": "Look: "},
    {"type": "text", "text": "The sky is  blue.", "citations": [
        {"type": "char_location", "cited_text": "The sky is blue.", "document_index": 0,
         "document_title": "Facts", "start_char_index": 20, "end_char_index": 36,
         "file_id": None}]},
    {"type": "text", "text": " And made up too."},
]  # fmt: skip


async def post(gw: TestServer, doc: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(gw.make_url("/v1/messages"), json=doc) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, parse_frames(await r.read())


@pytest.mark.parametrize("dialect", ["responses", "chat"])
async def test_quotes_become_cited_blocks(
    make_gateway: GatewayFactory, upstream: Upstream, dialect: str
) -> None:
    gw = await make_gateway(upstreams={"default": {"base_url": upstream.url, "dialect": dialect}})
    for _ in range(3):
        upstream.mock.enqueue(Script(items=[Text(ANSWER)]))
    status, answer = await post(gw, ask(document()))
    assert status == 200
    assert answer["content"] == EXPECTED
    assert DOC[20:36] == "The sky is blue."
    sent = upstream.mock.requests[-1].body
    if dialect == "responses":
        assert sent["instructions"] == INSTRUCTION
        assert sent["input"][0]["content"][0] == {
            "type": "input_text", "text": f"[document 0] Facts\n{DOC}"}  # fmt: skip
    else:
        assert sent["messages"][0] == {"role": "system", "content": INSTRUCTION}
        assert sent["messages"][1]["content"].startswith(f"[document 0] Facts\n{DOC}")

    # streamed: whole blocks, citations before the text, as Anthropic sends them
    status, events = await post(gw, {**ask(document()), "stream": True})
    check_stream(events)
    cited = [(n, d) for n, d in events if d.get("index") == 1]
    kinds = [(n, (d.get("delta") or d.get("content_block") or {}).get("type")) for n, d in cited]
    assert kinds == [
        ("content_block_start", "text"), ("content_block_delta", "citations_delta"),
        ("content_block_delta", "text_delta"), ("content_block_stop", None)]  # fmt: skip
    assert cited[0][1]["content_block"] == {"type": "text", "text": "", "citations": []}
    client = anthropic.AsyncAnthropic(base_url=str(gw.make_url("")), api_key="k", max_retries=0)
    async with client.messages.stream(**ask(document())) as s:
        final = await s.get_final_message()
    await client.close()
    assert [b.model_dump(exclude_none=True) for b in final.content] == [
        {**b, "citations": [{k: v for k, v in c.items() if v is not None}
                            for c in b.get("citations", [])]}
        if "citations" in b else b for b in EXPECTED]  # fmt: skip


async def test_search_results_and_content_documents(
    gateway: TestServer, upstream: Upstream
) -> None:
    result = {
        "type": "search_result",
        "source": "https://kb.example/sky",
        "title": "Sky",
        "citations": ON,
        "content": [
            {"type": "text", "text": "Rayleigh scattering."},
            {"type": "text", "text": "The sky looks blue."},
        ],
    }
    content_doc = {
        "type": "document",
        "title": "Notes",
        "citations": ON,
        "source": {
            "type": "content",
            "content": [
                {"type": "text", "text": "First note."},
                {"type": "text", "text": "Second note."},
            ],
        },
    }
    history = [
        {"role": "user", "content": [content_doc, {"type": "text", "text": "look it up"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "kb",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [result]}]},
    ]  # fmt: skip
    upstream.mock.enqueue(Script(items=[Text(
        '<cite source="search result 0">The sky looks blue.</cite>'
        '<cite source="document 0">Second note.</cite>')]))  # fmt: skip
    tools = [{"name": "kb", "input_schema": {"type": "object", "properties": {}}}]
    status, answer = await post(gateway, {"model": MODEL, "max_tokens": 100, "tools": tools,
                                          "messages": history})  # fmt: skip
    assert status == 200
    assert answer["content"] == [
        {"type": "text", "text": "The sky looks blue.", "citations": [
            {"type": "search_result_location", "cited_text": "The sky looks blue.",
             "source": "https://kb.example/sky", "title": "Sky", "search_result_index": 0,
             "start_block_index": 1, "end_block_index": 2}]},
        {"type": "text", "text": "Second note.", "citations": [
            {"type": "content_block_location", "cited_text": "Second note.",
             "document_index": 0, "document_title": "Notes", "start_block_index": 1,
             "end_block_index": 2, "file_id": None}]},
    ]  # fmt: skip
    output = json.dumps(upstream.mock.requests[-1].body["input"])
    assert "[search result 0] Sky" in output and "[document 0] Notes" in output


@pytest.mark.parametrize(
    ("extra", "blocks", "message"),
    [
        ({}, [document(), document(citations={"enabled": False})],
         "citations must be enabled on all or none of the documents and search results"),
        ({}, [document(source={"type": "base64", "media_type": "application/pdf",
                               "data": "JVBERi0x"})],
         "messages.0.content.0.citations: citations on PDF documents are not supported by the "
         "gateway (it cannot read their pages to give page locations)"),
        ({"output_config": {"format": {"type": "json_schema", "schema": {
            "type": "object", "properties": {}, "additionalProperties": False}}}},
         [document()], "citations cannot be used with structured outputs"),
    ],
)  # fmt: skip
async def test_what_is_not_supported_is_a_400(
    gateway: TestServer, upstream: Upstream, extra: dict[str, Any], blocks: list[Any],
    message: str,
) -> None:  # fmt: skip
    status, answer = await post(gateway, ask(*blocks, **extra))
    assert status == 400
    assert answer["error"] == {"type": "invalid_request_error", "message": message}
    assert upstream.mock.requests == []


async def test_without_citations_nothing_changes(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(Script(items=[Text(ANSWER)]))
    status, answer = await post(gateway, ask(document(citations=None)))
    assert status == 200
    assert answer["content"] == [{"type": "text", "text": ANSWER}]
    assert "instructions" not in upstream.mock.requests[-1].body


def test_quotes_are_found_in_linear_time() -> None:
    # A tag left open no longer reads the rest of the answer (8,000 of them in 224 KB took 5.6 s
    # of the event loop; this 5.6 MB would take hours): they stay as written, and of open tags
    # before a closed one only the last is the quote. Run apart so a regression fails, not hangs.
    import subprocess
    import sys

    script = """
from gateway.anthropic.citations import CitationPlan, _Source
plan = CitationPlan(documents={1: _Source("text", 1, "Facts", ["The sky is blue."])})
opened = '<cite source="document 1">x ' * 200_000
blocks = plan.segments(opened)
assert [(b.text, isinstance(b.citations, list)) for b in blocks] == [(opened, False)]
blocks = plan.segments(opened[:100] + '<cite source="document 1">The sky is blue.</cite>')
assert [(b.text, isinstance(b.citations, list)) for b in blocks] == [
    (opened[:100], False), ("The sky is blue.", True)]
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
