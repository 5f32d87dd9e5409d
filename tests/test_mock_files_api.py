"""The mock upstream's Files and Batch APIs (OpenAI's wire shapes), over a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.mock_upstream import MockUpstream, Script, Text, error_envelope, files_api
from tests.conftest import Upstream

MODEL = "gpt-4o"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def jsonl(*lines: Any) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def req(cid: str, text: str = "hello", model: str = MODEL, url: str = "/v1/responses") -> Any:
    body: dict[str, Any] = {"model": model, "input": text}
    if url == "/v1/chat/completions":
        body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": cid, "method": "POST", "url": url, "body": body}


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kw) as resp:
        raw = await resp.read()
        is_json = resp.content_type == "application/json"
        return resp.status, orjson.loads(raw) if is_json else raw


async def upload(
    http: aiohttp.ClientSession, up: Upstream, data: bytes, **fields: str
) -> tuple[int, Any]:
    form = aiohttp.FormData()
    for name, value in {"purpose": "batch", **fields}.items():
        form.add_field(name, value)
    form.add_field("file", data, filename="in.jsonl", content_type="application/jsonl")
    return await call(http, "POST", up.url + "/files", data=form)


async def batch(
    http: aiohttp.ClientSession, up: Upstream, data: bytes, endpoint: str = "/v1/responses"
) -> Any:
    _, file = await upload(http, up, data)
    body = {"input_file_id": file["id"], "endpoint": endpoint, "completion_window": "24h"}
    status, obj = await call(http, "POST", up.url + "/batches", json=body)
    assert status == 200, obj
    return obj


def refusal(message: str, param: str | None = None) -> Any:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    }


def page(data: list[Any], has_more: bool = False) -> Any:
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {
        "object": "list",
        "data": data,
        "first_id": first,
        "last_id": last,
        "has_more": has_more,
    }


async def test_file_upload_get_list_content_delete(
    upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    status, obj = await upload(http, upstream, b"abc\n")
    assert status == 200
    assert obj == {
        "id": "file-mock000000000000000001",
        "object": "file",
        "bytes": 4,
        "created_at": obj["created_at"],
        "filename": "in.jsonl",
        "purpose": "batch",
        "status": "processed",
        "expires_at": obj["created_at"] + 30 * 86400,
        "status_details": None,
    }
    recorded = {"purpose": "batch", "filename": "in.jsonl", "bytes": 4}
    assert upstream.mock.requests[-1].body == recorded
    url = f"{upstream.url}/files/{obj['id']}"
    assert await call(http, "GET", url) == (200, obj)
    assert await call(http, "GET", url + "/content") == (200, b"abc\n")
    _, other = await upload(
        http,
        upstream,
        b"x",
        purpose="user_data",
        **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"},
    )
    assert (other["purpose"], other["expires_at"]) == ("user_data", other["created_at"] + 3600)
    assert await call(http, "GET", upstream.url + "/files") == (200, page([other, obj]))
    for query, listing in [
        ({"order": "asc", "limit": "1"}, page([obj], has_more=True)),
        ({"after": other["id"]}, page([obj])),
        ({"purpose": "vision"}, page([])),
    ]:
        assert await call(http, "GET", upstream.url + "/files", params=query) == (200, listing)
    deleted = {"id": obj["id"], "object": "file", "deleted": True}
    assert await call(http, "DELETE", url) == (200, deleted)
    assert await call(http, "GET", url) == (404, refusal(f"No such File object: {obj['id']}", "id"))
    assert (await call(http, "GET", url + "/content"))[0] == 404


async def test_upload_refusals(
    upstream: Upstream, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, err = await upload(http, upstream, b"x", purpose="nope")
    assert (status, err["error"]["param"], err["error"]["type"]) == (
        400,
        "purpose",
        "invalid_request_error",
    )
    form = aiohttp.FormData({"purpose": "batch"}, default_to_multipart=True)
    status, err = await call(http, "POST", upstream.url + "/files", data=form)
    assert (status, err) == (400, refusal("Missing required parameter: 'file'.", "file"))
    status, err = await upload(http, upstream, b"x", **{"expires_after[seconds]": "10"})
    assert (status, err["error"]["param"]) == (400, "expires_after.seconds")
    monkeypatch.setattr(files_api, "MAX_UPLOAD_BYTES", 1000)
    status, err = await upload(http, upstream, b"x" * 5000)
    assert (status, err["error"]["param"]) == (413, "file")
    assert upstream.mock.files == {}


async def test_auth_is_checked(aiohttp_server: Any, http: aiohttp.ClientSession) -> None:
    mock = MockUpstream(api_key="sk-right")
    server = await aiohttp_server(mock.app)
    status, err = await call(http, "GET", str(server.make_url("/v1/batches")))
    assert status == 401 and err["error"]["message"].startswith("You didn't provide an API key")
    status, _ = await call(
        http,
        "POST",
        str(server.make_url("/v1/files")),
        headers={"Authorization": "Bearer sk-wrong"},
        data=aiohttp.FormData({"purpose": "batch"}, default_to_multipart=True),
    )
    assert status == 401
    assert [(r.method, r.path, r.body) for r in mock.requests] == [
        ("GET", "/v1/batches", None),
        ("POST", "/v1/files", None),
    ]


async def test_completed_batch_output_and_error_lines(
    upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    upstream.mock.enqueue(Script(items=[Text("hi")]), Script(status=400))
    obj = await batch(http, upstream, jsonl(req("a"), req("b")))
    now = obj["created_at"]
    assert obj == {
        "id": "batch_6d6f636b000000000000000000000001",
        "object": "batch",
        "endpoint": "/v1/responses",
        "model": None,
        "errors": None,
        "input_file_id": "file-mock000000000000000001",
        "completion_window": "24h",
        "status": "completed",
        "output_file_id": "file-mock000000000000000002",
        "error_file_id": "file-mock000000000000000003",
        "created_at": now,
        "in_progress_at": now,
        "expires_at": now + 86400,
        "finalizing_at": now,
        "completed_at": now,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 2, "completed": 1, "failed": 1},
        "metadata": None,
        "usage": None,
    }
    _, out_file = await call(http, "GET", f"{upstream.url}/files/{obj['output_file_id']}")
    assert (out_file["purpose"], out_file["filename"]) == (
        "batch_output",
        f"{obj['id']}_output.jsonl",
    )
    _, raw = await call(http, "GET", f"{upstream.url}/files/{obj['output_file_id']}/content")
    [line] = [orjson.loads(x) for x in raw.splitlines()]
    assert line["id"].startswith("batch_req_") and (line["custom_id"], line["error"]) == ("a", None)
    response = line["response"]
    assert (sorted(response), response["status_code"]) == (
        ["body", "request_id", "status_code"],
        200,
    )
    assert response["request_id"].startswith("req_")
    body = response["body"]
    assert (body["object"], body["status"], body["model"]) == ("response", "completed", MODEL)
    assert body["output"][0]["content"][0]["text"] == "hi"
    _, raw = await call(http, "GET", f"{upstream.url}/files/{obj['error_file_id']}/content")
    [err] = [orjson.loads(x) for x in raw.splitlines()]
    assert (err["custom_id"], err["error"]) == ("b", None)
    assert err["response"]["status_code"] == 400
    assert err["response"]["body"] == error_envelope(400)
    assert upstream.mock.pending == 0


async def test_chat_batch_uses_the_default_answer(
    upstream: Upstream, http: aiohttp.ClientSession
) -> None:
    obj = await batch(
        http, upstream, jsonl(req("c", url="/v1/chat/completions")), "/v1/chat/completions"
    )
    assert (obj["status"], obj["error_file_id"]) == ("completed", None)
    _, raw = await call(http, "GET", f"{upstream.url}/files/{obj['output_file_id']}/content")
    body = orjson.loads(raw)["response"]["body"]
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "echo: hello"


@pytest.mark.parametrize(
    ("lines", "code", "line"),
    [
        (jsonl(req("a"), req("b", model="gpt-5")), "model_mismatch", 2),
        (jsonl(req("a"), req("a")), "duplicate_custom_id", 2),
        (jsonl(req("a", url="/v1/chat/completions")), "url_mismatch", 1),
        (b'{"custom_id": \n', "invalid_json_line", 1),
        (b"\n", "empty_file", None),
    ],
)
async def test_invalid_input_fails_the_batch(
    upstream: Upstream, http: aiohttp.ClientSession, lines: bytes, code: str, line: int | None
) -> None:
    obj = await batch(http, upstream, lines)
    assert (obj["status"], obj["output_file_id"], obj["error_file_id"]) == ("failed", None, None)
    assert obj["failed_at"] == obj["created_at"] and obj["in_progress_at"] is None
    [error] = obj["errors"]["data"]
    assert obj["errors"]["object"] == "list"
    assert (error["code"], error["param"], error["line"]) == (code, None, line)
    assert error["message"]


async def test_create_batch_refusals(upstream: Upstream, http: aiohttp.ClientSession) -> None:
    _, file = await upload(http, upstream, jsonl(req("a")))
    good = {"input_file_id": file["id"], "endpoint": "/v1/responses", "completion_window": "24h"}
    changes: list[tuple[dict[str, Any], str]] = [
        ({"input_file_id": "file-nope"}, "input_file_id"),
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
    ]
    for change, param in changes:
        status, err = await call(http, "POST", upstream.url + "/batches", json={**good, **change})
        assert (status, err["error"]["param"]) == (400, param), change
    assert upstream.mock.batches == {}


async def test_expired_batch(upstream: Upstream, http: aiohttp.ClientSession) -> None:
    upstream.mock.batch_auto_complete = False
    obj = await batch(http, upstream, jsonl(req("a"), req("b")))
    assert obj["status"] == "in_progress" and obj["output_file_id"] is None
    assert obj["request_counts"] == {"total": 2, "completed": 0, "failed": 0}
    upstream.mock.finish_batch(obj["id"], outcome="expired", done=1)
    _, obj = await call(http, "GET", f"{upstream.url}/batches/{obj['id']}")
    assert obj["status"] == "expired" and obj["expired_at"] is not None
    assert obj["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    _, raw = await call(http, "GET", f"{upstream.url}/files/{obj['output_file_id']}/content")
    assert orjson.loads(raw)["custom_id"] == "a"
    _, raw = await call(http, "GET", f"{upstream.url}/files/{obj['error_file_id']}/content")
    line = orjson.loads(raw)
    assert line == {
        "id": line["id"],
        "custom_id": "b",
        "response": None,
        "error": {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        },
    }


async def test_cancel_and_list(upstream: Upstream, http: aiohttp.ClientSession) -> None:
    done = await batch(http, upstream, jsonl(req("a")))
    upstream.mock.batch_auto_complete = False
    obj = await batch(http, upstream, jsonl(req("a")))
    url = f"{upstream.url}/batches/{obj['id']}"
    status, cancelling = await call(http, "POST", url + "/cancel")
    assert (status, cancelling["status"]) == (200, "cancelling") and cancelling["cancelling_at"]
    _, cancelled = await call(http, "GET", url)
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] is not None
    assert cancelled["output_file_id"] is None and cancelled["request_counts"]["completed"] == 0
    for target, state in ((obj, "cancelled"), (done, "completed")):
        status, err = await call(http, "POST", f"{upstream.url}/batches/{target['id']}/cancel")
        assert (status, err) == (400, refusal(f"Cannot cancel a batch with status '{state}'."))
    missing = refusal("No such Batch object: batch_x", "id")
    assert await call(http, "GET", upstream.url + "/batches/batch_x") == (404, missing)
    listing = page([cancelled], has_more=True)
    assert await call(http, "GET", upstream.url + "/batches", params={"limit": "1"}) == (
        200,
        listing,
    )
    _, listing = await call(http, "GET", upstream.url + "/batches", params={"after": obj["id"]})
    assert [b["id"] for b in listing["data"]] == [done["id"]] and not listing["has_more"]
    assert (await call(http, "GET", upstream.url + "/batches", params={"limit": "101"}))[0] == 400
