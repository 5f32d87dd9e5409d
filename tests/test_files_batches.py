"""The Files and Message Batches APIs on the upstream's Files and Batch APIs (issue 15 item 8),
through the gateway with the official SDK as the client and the mock's OpenAI Files and Batch
APIs as the upstream."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp.test_utils import TestServer

from gateway.mock_upstream import Script, Text
from tests.conftest import GatewayFactory, Upstream

MODEL = "claude-sonnet-5-5"
PDF = b"%PDF-1.4 tiny"


def sdk(gw: TestServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=str(gw.make_url("")), api_key="k", max_retries=0)


def upstream_file(upstream: Upstream, name: str) -> Any:
    [found] = [f for f in upstream.mock.files.values() if f.filename == name]
    return found


# ---------------------------------------------------------------------------------------------
# Files


async def test_file_lifecycle(gateway: TestServer, upstream: Upstream) -> None:
    client = sdk(gateway)
    meta = await client.beta.files.upload(file=("notes.txt", b"hello files", "text/plain"))
    assert meta.id.startswith("file_gw1.") and meta.type == "file"
    assert (meta.filename, meta.mime_type, meta.size_bytes) == ("notes.txt", "text/plain", 11)
    assert meta.downloadable is False and meta.created_at.year >= 2026
    held = upstream_file(upstream, "notes.txt")
    assert (held.purpose, held.data) == ("user_data", b"hello files")

    again = await client.beta.files.retrieve_metadata(meta.id)
    assert again.model_dump() == meta.model_dump()
    second = await client.beta.files.upload(file=("b.pdf", PDF, "application/pdf"))
    page = await client.beta.files.list(limit=10)
    assert [f.id for f in page.data] == [second.id, meta.id]  # newest first
    assert [f.mime_type for f in page.data] == ["application/pdf", "text/plain"]

    with pytest.raises(anthropic.BadRequestError) as info:
        await client.beta.files.download(meta.id)
    assert info.value.body["error"]["details"] == {"error_code": "file_not_downloadable"}

    deleted = await client.beta.files.delete(meta.id)
    assert (deleted.id, deleted.type) == (meta.id, "file_deleted")
    with pytest.raises(anthropic.NotFoundError) as gone:
        await client.beta.files.retrieve_metadata(meta.id)
    assert gone.value.body["error"] == {"type": "not_found_error",
                                        "message": f"File not found: {meta.id}"}  # fmt: skip
    with pytest.raises(anthropic.NotFoundError):  # made up: not an id of this gateway
        await client.beta.files.retrieve_metadata("file_011CNha8iCJcU1wXNR6q4V8w")
    await client.close()


@pytest.mark.parametrize("dialect", ["responses", "chat"])
async def test_file_sources_in_messages(
    make_gateway: GatewayFactory, upstream: Upstream, dialect: str
) -> None:
    gw = await make_gateway(upstreams={"default": {"base_url": upstream.url, "dialect": dialect}})
    client = sdk(gw)
    pdf = await client.beta.files.upload(file=("r.pdf", PDF, "application/pdf"))
    png = await client.beta.files.upload(file=("p.png", b"\x89PNG....", "image/png"))
    pdf_up, png_up = upstream_file(upstream, "r.pdf").id, upstream_file(upstream, "p.png").id
    upstream.mock.enqueue(Script(items=[Text("read it")]))
    doc = {"type": "document", "source": {"type": "file", "file_id": pdf.id}}
    msg = await client.messages.create(model=MODEL, max_tokens=50, messages=[
        {"role": "user", "content": [doc, {"type": "text", "text": "sum up"}]}])  # fmt: skip
    assert msg.content[0].text == "read it"  # type: ignore[union-attr]
    body = upstream.mock.requests[-1].body
    if dialect == "responses":
        assert body["input"][0]["content"][0] == {"type": "input_file", "file_id": pdf_up}
    else:
        assert body["messages"][0]["content"][0] == {"type": "file", "file": {"file_id": pdf_up}}
    image = {"type": "image", "source": {"type": "file", "file_id": png.id}}
    if dialect == "responses":
        upstream.mock.enqueue(Script(items=[Text("seen")]))
        await client.messages.create(model=MODEL, max_tokens=50,
                                     messages=[{"role": "user", "content": [image]}])  # fmt: skip
        part = upstream.mock.requests[-1].body["input"][0]["content"][0]
        assert part == {"type": "input_image", "file_id": png_up, "detail": "auto"}
    else:
        only_image = [{"role": "user", "content": [image]}]
        with pytest.raises(anthropic.BadRequestError, match="take no image by file_id"):
            await client.messages.create(model=MODEL, max_tokens=50, messages=only_image)
    # a made-up id, and a file used as what it is not
    forged = {"type": "document", "source": {"type": "file", "file_id": "file_abc"}}
    with pytest.raises(anthropic.BadRequestError, match="file not found: file_abc"):
        await client.messages.create(model=MODEL, max_tokens=50,
                                     messages=[{"role": "user", "content": [forged]}])  # fmt: skip
    wrong = {"type": "image", "source": {"type": "file", "file_id": pdf.id}}
    with pytest.raises(anthropic.BadRequestError, match="Invalid file type: application/pdf"):
        await client.messages.create(model=MODEL, max_tokens=50,
                                     messages=[{"role": "user", "content": [wrong]}])  # fmt: skip
    await client.close()


# ---------------------------------------------------------------------------------------------
# Batches


def req(custom_id: str, text: str, **params: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "params": {
        "model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": text}],
        **params}}  # fmt: skip


async def results_of(client: anthropic.AsyncAnthropic, batch_id: str) -> dict[str, Any]:
    return {r.custom_id: r.result async for r in await client.messages.batches.results(batch_id)}


async def test_batch_round_trip(gateway: TestServer, upstream: Upstream) -> None:
    client = sdk(gateway)
    schema = {"type": "object", "additionalProperties": False,
              "properties": {"n": {"type": "integer"}, "note": {"type": "string"}},
              "required": ["n"]}  # fmt: skip
    upstream.mock.enqueue(
        Script(items=[Text("first answer")]),
        Script(status=400, error_message="Invalid prompt: refused"),
        Script(items=[Text('{"n": 3, "note": null}')]),
    )
    batch = await client.messages.batches.create(requests=[
        req("a-1", "one"), req("b-2", "two"),
        req("c-3", "three", output_config={"format": {"type": "json_schema", "schema": schema}}),
    ])  # type: ignore[list-item]  # fmt: skip
    assert batch.id.startswith("msgbatch_gw1.") and batch.type == "message_batch"
    assert batch.processing_status == "ended"  # the mock finishes at once
    assert batch.request_counts.model_dump() == {
        "processing": 0, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 0}  # fmt: skip
    assert (
        batch.results_url
        == f"{str(gateway.make_url('')).rstrip('/')}/v1/messages/batches/{batch.id}/results"
    )
    # what went upstream: the translated requests as JSONL, and the plans beside them
    [mock_batch] = upstream.mock.batches.values()
    assert mock_batch.endpoint == "/v1/responses"
    lines = [json.loads(x) for x in upstream.mock.files[mock_batch.input_file_id].data.splitlines()]
    assert [(x["custom_id"], x["url"], x["body"]["model"], x["body"]["stream"]) for x in lines] == [
        ("a-1", "/v1/responses", "gpt-5", False), ("b-2", "/v1/responses", "gpt-5", False),
        ("c-3", "/v1/responses", "gpt-5", False)]  # fmt: skip
    assert lines[2]["body"]["text"]["format"]["strict"] is True

    got = await results_of(client, batch.id)
    assert got["a-1"].type == "succeeded"
    assert got["a-1"].message.model == MODEL
    assert got["a-1"].message.content[0].text == "first answer"
    assert got["b-2"].type == "errored"
    assert got["b-2"].error.error.model_dump() == {
        "type": "invalid_request_error", "message": "Invalid prompt: refused"}  # fmt: skip
    assert got["c-3"].message.content[0].text == '{"n":3}'  # restored to the client's schema
    again = await client.messages.batches.retrieve(batch.id)
    assert again.model_dump() == batch.model_dump()
    await client.close()


async def test_cancel_expire_delete_and_list(gateway: TestServer, upstream: Upstream) -> None:
    client = sdk(gateway)
    upstream.mock.batch_auto_complete = False
    first = await client.messages.batches.create(requests=[req("x", "1"), req("y", "2")])  # type: ignore[list-item]
    assert first.processing_status == "in_progress"
    assert first.request_counts.processing == 2 and first.results_url is None
    # the SDK will not ask before results_url is set; a client that does gets a 400
    async with (
        aiohttp.ClientSession() as s,
        s.get(gateway.make_url(f"/v1/messages/batches/{first.id}/results")) as r,
    ):
        assert r.status == 400
        assert "has not finished processing" in (await r.json())["error"]["message"]
    with pytest.raises(anthropic.BadRequestError, match="only be deleted once"):
        await client.messages.batches.delete(first.id)
    canceling = await client.messages.batches.cancel(first.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at
    ended = await client.messages.batches.retrieve(first.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.canceled == 2
    assert {k: v.type for k, v in (await results_of(client, first.id)).items()} == {
        "x": "canceled", "y": "canceled"}  # fmt: skip

    upstream.mock.enqueue(Script(items=[Text("made it")]))
    second = await client.messages.batches.create(requests=[req("p", "1"), req("q", "2")])  # type: ignore[list-item]
    [mock_id] = [k for k, b in upstream.mock.batches.items() if b.status == "in_progress"]
    upstream.mock.finish_batch(mock_id, outcome="expired", done=1)
    expired = await client.messages.batches.retrieve(second.id)
    assert expired.request_counts.model_dump() == {
        "processing": 0, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 1}  # fmt: skip
    assert {k: v.type for k, v in (await results_of(client, second.id)).items()} == {
        "p": "succeeded", "q": "expired"}  # fmt: skip

    listed = await client.messages.batches.list(limit=10)
    assert [b.id for b in listed.data] == [second.id, first.id]  # newest first
    deleted = await client.messages.batches.delete(first.id)
    assert (deleted.id, deleted.type) == (first.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.batches.retrieve(first.id)
    await client.close()


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([], "requests: must hold at least one request"),
        ([req("bad id!", "x")], "requests.0.custom_id: must match ^[a-zA-Z0-9_-]{1,64}$"),
        ([req("a", "x"), req("a", "y")],
         "requests.1.custom_id: 'a' is used twice; custom_id values must be unique within a "
         "batch"),
        ([req("a", "x", stream=True)], "requests.0.params.stream: not supported in a batch"),
        ([req("a", "x"), {"custom_id": "b", "params": {
            "model": MODEL, "messages": [{"role": "user", "content": "y"}]}}],
         "requests.1.params: Object missing required field `max_tokens`"),
    ],
)  # fmt: skip
async def test_batch_refusals(
    gateway: TestServer, upstream: Upstream, requests: list[Any], message: str
) -> None:
    client = sdk(gateway)
    with pytest.raises(anthropic.BadRequestError) as info:
        await client.messages.batches.create(requests=requests)
    await client.close()
    assert info.value.body["error"] == {"type": "invalid_request_error", "message": message}
    assert upstream.mock.batches == {}


async def test_a_batch_on_a_chat_route(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    chat = {"base_url": upstream.url, "api_key_env": "TEST_UPSTREAM_KEY", "dialect": "chat"}
    gw = await make_gateway(upstreams={"default": chat})
    client = sdk(gw)
    upstream.mock.enqueue(Script(items=[Text("over chat")]))
    batch = await client.messages.batches.create(requests=[req("k", "hello")])  # type: ignore[list-item]
    [mock_batch] = upstream.mock.batches.values()
    assert mock_batch.endpoint == "/v1/chat/completions"
    [line] = [
        json.loads(x) for x in upstream.mock.files[mock_batch.input_file_id].data.splitlines()
    ]
    assert (line["url"], line["body"]["messages"]) == (
        "/v1/chat/completions", [{"role": "user", "content": "hello"}])  # fmt: skip
    got = await results_of(client, batch.id)
    assert got["k"].type == "succeeded"
    assert got["k"].message.content[0].text == "over chat"
    assert got["k"].message.model == MODEL
    await client.close()


# --------------------------------------------------------------------------------------------
# Reading an upstream JSONL body line by line (issue 19: linear however it is cut)

_FAKE_BODY = """
class _Content:
    def __init__(self, chunks):
        self.chunks = chunks

    async def iter_chunked(self, n):
        for chunk in self.chunks:
            yield chunk


class _Resp:
    def __init__(self, chunks):
        self.content = _Content(chunks)
        self.released = False

    def release(self):
        self.released = True


async def lines_of(chunks, limit):
    from gateway.batches import _lines

    resp = _Resp(chunks)
    out = [line async for line in _lines(resp, limit)]
    assert resp.released
    return out
"""


def _run_lines(chunks_expr: str, limit: int, check: str) -> None:
    import subprocess
    import sys

    script = f"""{_FAKE_BODY}
import asyncio
chunks = {chunks_expr}
got = asyncio.run(lines_of(chunks, {limit}))
{check}
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_jsonl_lines_across_chunks_and_the_limit() -> None:
    body = b'{"a":1}\n\n{"b":22}\n{"c":333}'
    cuts = "[" + ", ".join(repr(body[i : i + 3]) for i in range(0, len(body), 3)) + "]"
    _run_lines(cuts, 100, "assert got == [b'{\"a\":1}', b'{\"b\":22}', b'{\"c\":333}'], got")


def test_jsonl_line_over_the_limit_is_an_error() -> None:
    check = (
        "from gateway.errors import GatewayError\n"
        "try:\n    asyncio.run(lines_of([b'x' * 60, b'x' * 60], 100))\n"
        "except GatewayError as exc:\n    assert 'exceeds' in str(exc)\n"
        "else:\n    raise AssertionError('no error')"
    )
    _run_lines("[b'{}\\n']", 100, check)


def test_jsonl_line_dripped_a_byte_at_a_time_is_read_in_linear_time() -> None:
    # a slow upstream can hand iter_chunked a byte at a time: a buffer grown and split again
    # on every chunk copied and scanned ~1 TB for this 1 MB (minutes); joined once, ~1 s
    check = "assert got == [b'y' * 1_000_000, b'z'], [len(x) for x in got]"
    _run_lines("[b'y'] * 1_000_000 + [b'\\n', b'z']", 2 << 20, check)
