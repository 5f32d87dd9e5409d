"""The mock upstream over real sockets: wire shapes (as in /work/shared/corpus), scripts,
default directives, byte shaping and disconnect accounting."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.mock_upstream import (
    FunctionCall,
    MockUpstream,
    Reasoning,
    Refusal,
    Script,
    Text,
    create_mock_app,
    default_script,
    shape_writes,
    start_mock,
)

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
SSE = "text/event-stream; charset=utf-8"
TOOLS_R = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
TOOLS_C = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


# ---- helpers -------------------------------------------------------------------------------


def parse_sse(raw: bytes) -> list[tuple[str | None, str]]:
    """A deliberately tiny SSE parser: (event name, data) per blank-line-terminated block."""
    text = raw.decode().replace("\r\n", "\n")
    events: list[tuple[str | None, str]] = []
    for block in text.split("\n\n"):
        if not block:
            continue
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        events.append((name, "\n".join(data)))
    return events


def responses_events(raw: bytes) -> list[dict[str, Any]]:
    """Parsed Responses events; asserts name == type and contiguous sequence numbers."""
    out = []
    for seq, (name, data) in enumerate(parse_sse(raw)):
        event = orjson.loads(data)
        assert name == event["type"]
        assert event["sequence_number"] == seq
        out.append(event)
    return out


def chat_chunks(raw: bytes) -> list[Any]:
    """Parsed Chat chunks; ``[DONE]`` stays a string. Chat streams carry no ``event:`` lines."""
    out: list[Any] = []
    for name, data in parse_sse(raw):
        assert name is None
        out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


def squash(seq: list[str]) -> list[str]:
    """Collapse runs of identical delta types (``x.delta`` ×n → one ``x.delta*``)."""
    out: list[str] = []
    for t in seq:
        mark = t + "*" if t.endswith(".delta") else t
        if not (mark.endswith("*") and out and out[-1] == mark):
            out.append(mark)
    return out


@pytest.fixture
def mock() -> MockUpstream:
    return MockUpstream()


@pytest.fixture
async def client(aiohttp_client: ClientFactory, mock: MockUpstream) -> TestClient[Any, Any]:
    return await aiohttp_client(create_mock_app(mock))


async def post(
    client: TestClient[Any, Any], path: str, body: dict[str, Any]
) -> tuple[int, dict[str, str], bytes]:
    async with client.post(path, json=body) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def rstream(client: TestClient[Any, Any], **body: Any) -> list[dict[str, Any]]:
    status, headers, raw = await post(
        client, "/v1/responses", {"model": "gpt-4o", "input": "hi", "stream": True, **body}
    )
    assert (status, headers["Content-Type"]) == (200, SSE)
    assert raw.endswith(b"\n\n") and b"[DONE]" not in raw
    return responses_events(raw)


async def cstream(client: TestClient[Any, Any], **body: Any) -> list[Any]:
    req = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    status, headers, raw = await post(client, "/v1/chat/completions", {**req, **body})
    assert (status, headers["Content-Type"]) == (200, SSE)
    return chat_chunks(raw)


async def rjson(client: TestClient[Any, Any], **body: Any) -> dict[str, Any]:
    status, headers, raw = await post(
        client, "/v1/responses", {"model": "gpt-4o", "input": "hi", **body}
    )
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert not raw.endswith(b"\n")  # Responses bodies have no trailing newline (corpus fact 7)
    result: dict[str, Any] = orjson.loads(raw)
    return result


async def cjson(client: TestClient[Any, Any], **body: Any) -> dict[str, Any]:
    req = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **body}
    status, _, raw = await post(client, "/v1/chat/completions", req)
    assert status == 200 and raw.endswith(b"}\n")  # Chat bodies end with a newline
    result: dict[str, Any] = orjson.loads(raw)
    return result


MESSAGE_EVENTS = [
    "output_item.added",
    "content_part.added",
    "output_text.delta*",
    "output_text.done",
    "content_part.done",
    "output_item.done",
]


# ---- Responses -----------------------------------------------------------------------------


async def test_responses_stream_text(client: TestClient[Any, Any], mock: MockUpstream) -> None:
    mock.enqueue(Script(items=[Text("Hello, world", chunks=["Hello", ", world"])]))
    events = await rstream(client)
    assert types(events) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    created, added, part = events[0]["response"], events[2]["item"], events[3]["part"]
    assert (created["status"], created["output"], created["usage"]) == ("in_progress", [], None)
    assert added == {
        "id": added["id"],
        "type": "message",
        "status": "in_progress",
        "content": [],
        "role": "assistant",
    }
    assert added["id"].startswith("msg_")
    assert part == {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    assert [e["delta"] for e in events[4:6]] == ["Hello", ", world"]
    assert events[4]["item_id"] == added["id"] and events[4]["logprobs"] == []
    assert events[6]["text"] == "Hello, world"
    final = events[-1]["response"]
    assert final["id"].startswith("resp_") and final["id"] == created["id"]
    assert final["status"] == "completed" and final["model"] == "gpt-4o"
    assert final["output"] == [events[8]["item"]]
    assert events[8]["item"]["status"] == "completed"
    assert set(final["usage"]) == {
        "input_tokens",
        "input_tokens_details",
        "output_tokens",
        "output_tokens_details",
        "total_tokens",
    }


async def test_responses_stream_parallel_function_calls(
    client: TestClient[Any, Any], mock: MockUpstream
) -> None:
    mock.enqueue(
        Script(
            items=[
                FunctionCall("get_weather", '{"city":"Paris"}', call_id="call_A"),
                FunctionCall("get_time", '{"tz":"CET"}', chunks=['{"tz"', ':"CET"}']),
            ]
        )
    )
    events = await rstream(client)
    call_events = ["output_item.added", "function_call_arguments.delta*"]
    call_events += ["function_call_arguments.done", "output_item.done"]
    assert squash(types(events)) == [
        "created",
        "in_progress",
        *call_events,
        *call_events,
        "completed",
    ]
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [a["output_index"] for a in added] == [0, 1]
    first = added[0]["item"]
    assert first["id"].startswith("fc_") and first["call_id"] == "call_A"
    assert (first["status"], first["arguments"], first["name"]) == (
        "in_progress",
        "",
        "get_weather",
    )
    assert added[1]["item"]["call_id"].startswith("call_")
    for index, args in ((0, '{"city":"Paris"}'), (1, '{"tz":"CET"}')):
        deltas = [
            e
            for e in events
            if e["type"] == "response.function_call_arguments.delta" and e["output_index"] == index
        ]
        assert "".join(d["delta"] for d in deltas) == args
        assert all(
            set(d) == {"type", "sequence_number", "item_id", "output_index", "delta"}
            for d in deltas
        )
    dones = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [d["arguments"] for d in dones] == ['{"city":"Paris"}', '{"tz":"CET"}']
    assert "name" not in dones[0]  # never in any recording (corpus fact 10)
    output = events[-1]["response"]["output"]
    assert [o["type"] for o in output] == ["function_call", "function_call"]
    assert [o["status"] for o in output] == ["completed", "completed"]


async def test_responses_stream_interleaved_calls(
    client: TestClient[Any, Any], mock: MockUpstream
) -> None:
    mock.enqueue(
        Script(
            items=[
                FunctionCall("a", "{}", chunks=["{", "}"]),
                FunctionCall("b", "{}", chunks=["{", "}"]),
            ],
            responses_interleave=True,
        )
    )
    events = await rstream(client)
    assert types(events)[2:-1] == [
        "output_item.added",
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.delta",
        "function_call_arguments.delta",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
        "function_call_arguments.done",
        "output_item.done",
    ]
    assert [e["output_index"] for e in events[4:8]] == [0, 1, 0, 1]


async def test_responses_function_call_without_deltas(
    client: TestClient[Any, Any], mock: MockUpstream
) -> None:
    mock.enqueue(Script(items=[FunctionCall("a", '{"x":1}', chunks=[])]))
    events = await rstream(client)
    assert types(events)[2:-1] == [
        "output_item.added",
        "function_call_arguments.done",
        "output_item.done",
    ]
    assert events[3]["arguments"] == '{"x":1}'


async def test_responses_stream_reasoning(client: TestClient[Any, Any], mock: MockUpstream) -> None:
    mock.enqueue(
        Script(
            items=[
                Reasoning(summary=["First part.", "Second part."], reasoning_text=["raw cot"]),
                Text("Answer."),
            ]
        )
    )
    events = await rstream(client)
    summary_part = [
        "reasoning_summary_part.added",
        "reasoning_summary_text.delta*",
        "reasoning_summary_text.done",
        "reasoning_summary_part.done",
    ]
    assert squash(types(events)) == [
        "created",
        "in_progress",
        "output_item.added",
        "reasoning_text.delta*",
        "reasoning_text.done",
        *summary_part,
        *summary_part,
        "output_item.done",
        *MESSAGE_EVENTS,
        "completed",
    ]
    added, done = events[2]["item"], next(e for e in events if e["type"].endswith("item.done"))
    assert added["id"].startswith("rs_")
    assert "encrypted_content" not in added and added["summary"] == []
    assert done["item"]["encrypted_content"] == "gAAAAB-mock"
    assert done["item"]["summary"] == [
        {"type": "summary_text", "text": "First part."},
        {"type": "summary_text", "text": "Second part."},
    ]
    assert done["item"]["content"] == [{"type": "reasoning_text", "text": "raw cot"}]
    parts = [e["summary_index"] for e in events if e["type"].endswith("summary_part.added")]
    assert parts == [0, 1]
    message_added = [e for e in events if e["type"] == "response.output_item.added"][1]
    assert message_added["output_index"] == 1
    usage = events[-1]["response"]["usage"]
    assert usage["output_tokens_details"]["reasoning_tokens"] > 0


async def test_responses_stream_refusal(client: TestClient[Any, Any], mock: MockUpstream) -> None:
    mock.enqueue(Script(items=[Refusal("No can do.")]))
    events = await rstream(client)
    assert squash(types(events)) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "refusal.delta*",
        "refusal.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    assert events[3]["part"] == {"type": "refusal", "refusal": ""}
    assert events[-2]["item"]["content"] == [{"type": "refusal", "refusal": "No can do."}]


async def test_responses_stream_incomplete(
    client: TestClient[Any, Any], mock: MockUpstream
) -> None:
    mock.enqueue(Script(items=[Text("cut")], end="incomplete"))
    events = await rstream(client)
    assert squash(types(events)) == ["created", "in_progress", *MESSAGE_EVENTS, "incomplete"]
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["completed_at"] is None
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-2]["item"]["status"] == "incomplete"
    assert final["output"][0]["status"] == "incomplete"


async def test_responses_stream_failed_error_event_and_none(
    client: TestClient[Any, Any], mock: MockUpstream
) -> None:
    mock.enqueue(
        Script(items=[], end="failed", error_code="rate_limit_exceeded", error_message="slow down"),
        Script(items=[Text("x")], end="error_event"),
        Script(items=[Text("x")], end="none"),
    )
    failed = await rstream(client)
    assert types(failed) == ["created", "in_progress", "failed"]
    assert failed[-1]["response"]["status"] == "failed"
    assert failed[-1]["response"]["error"] == {
        "code": "rate_limit_exceeded",
        "message": "slow down",
    }
    errored = await rstream(client)
    assert squash(types(errored)) == ["created", "in_progress", *MESSAGE_EVENTS, "error"]
    assert errored[-1]["code"] == "server_error" and errored[-1]["message"]
    unterminated = await rstream(client)
    assert squash(types(unterminated)) == ["created", "in_progress", *MESSAGE_EVENTS]


async def test_responses_json_shapes(client: TestClient[Any, Any], mock: MockUpstream) -> None:
    mock.enqueue(
        Script(
            items=[
                Reasoning(summary=["why"]),
                Text("Hi."),
                FunctionCall("a", "{}", call_id="call_1"),
                FunctionCall("b", "{}"),
            ],
            usage={
                "input_tokens": 100,
                "cached_tokens": 64,
                "output_tokens": 30,
                "reasoning_tokens": 10,
            },
        ),
        Script(items=[Refusal("no")]),
        Script(items=[], end="failed"),
    )
    body = await rjson(client, instructions="be brief", tools=TOOLS_R, max_output_tokens=500)
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["id"].startswith("resp_") and isinstance(body["created_at"], int)
    assert (body["instructions"], body["tools"], body["max_output_tokens"]) == (
        "be brief",
        TOOLS_R,
        500,
    )
    assert (body["error"], body["incomplete_details"]) == (None, None)
    output = body["output"]
    assert [o["type"] for o in output] == ["reasoning", "message", "function_call", "function_call"]
    assert [o["id"][:3] for o in output] == ["rs_", "msg", "fc_", "fc_"]
    assert output[0] == {
        "id": output[0]["id"],
        "type": "reasoning",
        "encrypted_content": "gAAAAB-mock",
        "summary": [{"type": "summary_text", "text": "why"}],
    }
    assert output[1]["content"] == [
        {"type": "output_text", "annotations": [], "logprobs": [], "text": "Hi."}
    ]
    assert output[2]["call_id"] == "call_1" and output[3]["call_id"] != "call_1"
    assert body["usage"] == {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 64},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 10},
        "total_tokens": 130,
    }
    refusal = await rjson(client)
    assert refusal["output"][0]["content"] == [{"type": "refusal", "refusal": "no"}]
    failed = await rjson(client)
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"


# ---- errors --------------------------------------------------------------------------------


async def test_error_statuses(client: TestClient[Any, Any], mock: MockUpstream) -> None:
    mock.enqueue(
        Script(status=429, headers={"retry-after": "7"}),
        Script(status=400, error_code="context_length_exceeded", error_message="too long"),
        Script(status=503, error_body={"error": {"message": "custom"}}),
        Script(status=500),
    )
    status, headers, raw = await post(
        client, "/v1/responses", {"model": "m", "input": "x", "stream": True}
    )
    # Errors on stream requests are plain JSON, not SSE (corpus fact 4).
    assert (status, headers["Retry-After"], headers["Content-Type"]) == (
        429,
        "7",
        "application/json",
    )
    assert orjson.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    status, _, raw = await post(client, "/v1/chat/completions", {"model": "m", "messages": []})
    assert status == 400
    assert orjson.loads(raw) == {
        "error": {
            "message": "too long",
            "type": "invalid_request_error",
            "param": None,
            "code": "context_length_exceeded",
        }
    }
    status, _, raw = await post(client, "/v1/responses", {"model": "m", "input": "x"})
    assert (status, orjson.loads(raw)) == (503, {"error": {"message": "custom"}})
    status, _, raw = await post(client, "/v1/responses", {"model": "m", "input": "x"})
    error = orjson.loads(raw)["error"]
    assert status == 500 and error["type"] == "server_error" and error["code"] is None


async def test_auth(aiohttp_client: ClientFactory) -> None:
    mock = MockUpstream(api_key="sk-test-1234567890abcd")
    client = await aiohttp_client(mock.app)
    body = {"model": "m", "input": "x"}
    mock.enqueue(Script(items=[Text("scripted")]))
    async with client.post(
        "/v1/responses", json=body, headers={"Authorization": "Bearer sk-wrong-0000000000zz"}
    ) as r:
        assert r.status == 401
        assert await r.json() == {
            "error": {
                "message": "Incorrect API key provided: sk-wrong****00zz. You can find your API "
                "key at https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
    async with client.post("/v1/chat/completions", json=body) as r:
        assert r.status == 401
        assert (await r.json())["error"]["message"].startswith("You didn't provide an API key.")
    async with client.get("/v1/models") as r:
        assert r.status == 401
    async with client.get("/healthz") as r:
        assert r.status == 200
    headers = {"Authorization": "Bearer sk-test-1234567890abcd"}
    async with client.post("/v1/responses", json=body, headers=headers) as r:
        assert r.status == 200
        # Refused requests did not consume the queued script.
        assert (await r.json())["output"][0]["content"][0]["text"] == "scripted"
    assert len(mock.requests) == 5


async def test_bad_json_body(client: TestClient[Any, Any], mock: MockUpstream) -> None:
    mock.enqueue(Script(items=[Text("kept")]))
    async with client.post(
        "/v1/responses", data=b"{nope", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_request_error"
    assert mock.requests[-1].body is None and mock.pending == 1


# ---- Chat Completions ----------------------------------------------------------------------


async def test_chat_stream_text_with_usage(
    client: TestClient[Any, Any], mock: MockUpstream
) -> None:
    mock.enqueue(Script(items=[Text("Hi there", chunks=["Hi", " there"])]))
    chunks = await cstream(client, stream_options={"include_usage": True})
    assert chunks[-1] == "[DONE]"
    body = chunks[:-1]
    assert [c["choices"][0]["delta"] if c["choices"] else "usage" for c in body] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Hi"},
        {"content": " there"},
        {},
        "usage",
    ]
    assert [c["choices"][0]["finish_reason"] for c in body[:-1]] == [None, None, None, "stop"]
    assert all(c["usage"] is None for c in body[:-1])
    assert len({c["id"] for c in body}) == 1 and body[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-4o" for c in body)
    usage = body[-1]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


async def test_chat_stream_without_usage(client: TestClient[Any, Any]) -> None:
    chunks = await cstream(client)
    assert chunks[-1] == "[DONE]" and all("usage" not in c for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_chat_stream_parallel_tool_calls(
    client: TestClient[Any, Any], mock: MockUpstream
) -> None:
    mock.enqueue(
        Script(
            items=[
                FunctionCall("a", '{"x":1}', call_id="call_A", chunks=['{"x"', ":1}"]),
                FunctionCall("b", "{}", call_id="call_B", chunks=["{}"]),
            ]
        )
    )
    chunks = await cstream(client)
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas == [
        {"role": "assistant", "content": None, "refusal": None},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_A",
                    "type": "function",
                    "function": {"name": "a", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"x"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_B",
                    "type": "function",
                    "function": {"name": "b", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def _tool_calls(chunks: list[Any]) -> list[dict[str, Any]]:
    return [
        tc
        for c in chunks[:-1]
        if c["choices"]
        for tc in c["choices"][0]["delta"].get("tool_calls", [])
    ]


async def test_chat_quirks(client: TestClient[Any, Any], mock: MockUpstream) -> None:
    calls = [FunctionCall("a", "{}", chunks=["{}"]), FunctionCall("b", "{}", chunks=["{}"])]
    mock.enqueue(
        Script(items=list(calls), chat_no_index=True),
        Script(items=list(calls), chat_zero_index=True),
        Script(items=list(calls), chat_missing_first_id=True),
        Script(items=list(calls), chat_interleave=True),
    )
    no_index = _tool_calls(await cstream(client))
    assert len(no_index) == 4 and all("index" not in tc for tc in no_index)
    zero = _tool_calls(await cstream(client))
    assert [tc["index"] for tc in zero] == [0, 0, 0, 0]
    missing = _tool_calls(await cstream(client))
    assert [("id" in tc, tc.get("type")) for tc in missing] == [
        (False, "function"),
        (False, None),
        (False, "function"),
        (False, None),
    ]
    interleaved = _tool_calls(await cstream(client))
    assert [(tc["index"], "id" in tc) for tc in interleaved] == [
        (0, True),
        (1, True),
        (0, False),
        (1, False),
    ]


async def test_chat_reasoning_refusal_and_error_chunk(
    client: TestClient[Any, Any], mock: MockUpstream
) -> None:
    mock.enqueue(
        Script(items=[Reasoning(summary=["s"], reasoning_text=["deep", " thought"]), Text("ok")]),
        Script(items=[Reasoning(summary=["sum"]), Text("ok")], chat_reasoning_field="reasoning"),
        Script(items=[Refusal("No.")]),
        Script(items=[Text("a b c")], chat_error_chunk=True, error_code="server_error"),
        Script(items=[Text("a")], end="failed"),
        Script(items=[Text("a")], end="none"),
        Script(items=[Text("a")], end="incomplete"),
    )
    chunks = await cstream(client)
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-2]]
    assert deltas == [
        {"reasoning_content": "deep"},
        {"reasoning_content": " thought"},
        {"content": "ok"},
    ]
    chunks = await cstream(client)
    assert chunks[1]["choices"][0]["delta"] == {"reasoning": "sum"}
    chunks = await cstream(client)
    assert chunks[0]["choices"][0]["delta"]["content"] is None
    assert chunks[1]["choices"][0]["delta"] == {"refusal": "No."}
    chunks = await cstream(client)
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "a"},
    ]
    assert chunks[2] == {
        "error": {
            "message": chunks[2]["error"]["message"],
            "type": "server_error",
            "param": None,
            "code": "server_error",
        }
    }
    assert len(chunks) == 3  # the stream ends at the error: no finish chunk, no [DONE]
    failed = await cstream(client)
    assert "error" in failed[-1] and "[DONE]" not in failed
    unterminated = await cstream(client)
    assert unterminated[-1]["choices"][0]["delta"] == {"content": "a"}
    length = await cstream(client)
    assert length[-2]["choices"][0]["finish_reason"] == "length"


async def test_chat_json_shapes(client: TestClient[Any, Any], mock: MockUpstream) -> None:
    mock.enqueue(
        Script(items=[Text("Hello.")]),
        Script(items=[Reasoning(summary=["r"]), FunctionCall("a", '{"x":1}', call_id="call_A")]),
        Script(items=[Refusal("No.")]),
        Script(items=[Text("long")], end="incomplete", incomplete_reason="content_filter"),
        Script(items=[Text("x")], end="failed"),
    )
    body = await cjson(client)
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello.",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert set(body["usage"]) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
    }
    body = await cjson(client)
    message = body["choices"][0]["message"]
    assert message["content"] is None and message["reasoning_content"] == "r"
    assert message["tool_calls"] == [
        {"id": "call_A", "type": "function", "function": {"name": "a", "arguments": '{"x":1}'}}
    ]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    body = await cjson(client)
    assert body["choices"][0]["message"]["refusal"] == "No."
    assert body["choices"][0]["message"]["content"] is None
    body = await cjson(client)
    assert body["choices"][0]["finish_reason"] == "content_filter"
    status, _, raw = await post(client, "/v1/chat/completions", {"model": "m", "messages": []})
    assert status == 500 and orjson.loads(raw)["error"]["type"] == "server_error"


# ---- byte shaping and faults ---------------------------------------------------------------


def normalise(raw: bytes) -> bytes:
    """Drop what legitimately differs between two answers: per-answer ids and clock values."""
    raw = raw.replace(b"\r\n", b"\n")
    raw = re.sub(rb"mock\d{8}", b"mockX", raw)
    return re.sub(rb'"(created_at|completed_at|created)":\d+', b'"\\1":0', raw)


@pytest.mark.parametrize(
    "shaping",
    [
        {"split": 1},
        {"split": 7},
        {"split": [3, 50, 51, 400]},
        {"crlf": True},
        {"crlf": True, "split": 5},
    ],
)
async def test_split_and_crlf_keep_event_content(
    client: TestClient[Any, Any], mock: MockUpstream, shaping: dict[str, Any]
) -> None:
    items: list[Any] = [Reasoning(summary=["ü thinking"]), Text("héllo wörld ⇒ ok")]
    mock.enqueue(Script(items=list(items)), Script(items=list(items), **shaping))
    body = {"model": "m", "input": "x", "stream": True}
    _, _, plain = await post(client, "/v1/responses", body)
    async with client.post("/v1/responses", json=body) as resp:
        pieces = [chunk async for chunk in resp.content.iter_any()]
    shaped = b"".join(pieces)
    assert (b"\r\n" in shaped) == bool(shaping.get("crlf"))
    assert normalise(shaped) == normalise(plain)
    assert [orjson.loads(d) for _, d in parse_sse(normalise(shaped))]


def test_shape_writes_cuts() -> None:
    frames = [b"abc\n\n", b"defg\n\n"]
    assert shape_writes(frames, Script()) == frames
    assert shape_writes(frames, Script(split=4)) == [b"abc\n", b"\ndef", b"g\n\n"]
    assert shape_writes(frames, Script(split=[1, 1, 99, 6])) == [b"a", b"bc\n\nd", b"efg\n\n"]
    assert shape_writes(frames, Script(stall_after_events=1)) == [b"abc\n\n"]
    assert shape_writes(frames, Script(drop_after_bytes=7)) == [b"abc\n\nde"]
    assert shape_writes(frames, Script(crlf=True, drop_after_bytes=6)) == [b"abc\r\n\r"]


async def test_drop_after_bytes_breaks_the_client(
    client: TestClient[Any, Any], mock: MockUpstream
) -> None:
    mock.enqueue(
        Script(items=[Text("a b c d e f")], drop_after_bytes=300),
        Script(items=[Text("a b c d e f")], drop_after_bytes=40),
    )
    with pytest.raises(aiohttp.ClientError):
        async with client.post(
            "/v1/responses", json={"model": "m", "input": "x", "stream": True}
        ) as r:
            assert r.status == 200
            await r.read()
    with pytest.raises(aiohttp.ClientError):
        async with client.post("/v1/responses", json={"model": "m", "input": "x"}) as r:
            await r.read()
    assert mock.open_streams() == 0


async def eventually(predicate: Callable[[], bool]) -> None:
    """Poll the mock's counters (they change on the server task) for up to 2 s."""
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 2 s")


async def test_stall_then_client_disconnect(
    client: TestClient[Any, Any], mock: MockUpstream
) -> None:
    mock.enqueue(Script(items=[Text("a b c")], stall_after_events=3))
    resp = await client.post("/v1/responses", json={"model": "m", "input": "x", "stream": True})
    assert resp.status == 200
    seen = b""
    while seen.count(b"\n\n") < 3:
        seen += await resp.content.readany()
    await asyncio.sleep(0.05)
    assert mock.open_streams() == 1 and mock.closed_streams == 0
    assert seen.count(b"\n\n") == 3  # nothing past the stall point
    resp.close()  # drops the connection, as a client that goes away does
    await eventually(lambda: mock.closed_streams == 1 and mock.open_streams() == 0)


async def test_disconnect_during_slow_stream(
    client: TestClient[Any, Any], mock: MockUpstream
) -> None:
    mock.enqueue(Script(items=[Text("a " * 50)], delay_between_events=0.01))
    resp = await client.post("/v1/responses", json={"model": "m", "input": "x", "stream": True})
    await resp.content.readany()
    resp.close()
    await eventually(lambda: mock.closed_streams == 1 and mock.open_streams() == 0)


async def test_delays_raw_body_and_content_type(
    client: TestClient[Any, Any], mock: MockUpstream
) -> None:
    mock.enqueue(
        Script(raw_body=b"data: {broken\n\n", content_type="text/plain", delay_before_headers=0.01),
        Script(items=[Text("a b")], delay_between_events=0.001, stall_after_events=None),
    )
    status, headers, raw = await post(
        client, "/v1/chat/completions", {"model": "m", "messages": [], "stream": True}
    )
    assert (status, headers["Content-Type"], raw) == (200, "text/plain", b"data: {broken\n\n")
    chunks = await cstream(client)
    assert chunks[-1] == "[DONE]"


# ---- defaults, recording, misc endpoints ---------------------------------------------------


async def test_default_echo_and_recording(client: TestClient[Any, Any], mock: MockUpstream) -> None:
    body = {
        "model": "gpt-5",
        "input": [
            {"role": "user", "content": "old"},
            {"role": "assistant", "content": "x"},
            {"role": "user", "content": [{"type": "input_text", "text": "Hello mock"}]},
        ],
    }
    async with client.post("/v1/responses", json=body, headers={"X-Canary": "c1"}) as r:
        answer = await r.json()
    assert answer["output"][0]["content"][0]["text"] == "echo: Hello mock"
    assert answer["model"] == "gpt-5"
    recorded = mock.requests[-1]
    assert (recorded.method, recorded.path, recorded.body) == ("POST", "/v1/responses", body)
    assert recorded.headers["X-Canary"] == "c1"
    assert (await rjson(client, input="plain string"))["output"][0]["content"][0][
        "text"
    ] == "echo: plain string"
    assert (await rjson(client, input=[]))["output"][0]["content"][0][
        "text"
    ] == "Hello from the mock upstream."
    chat = await cjson(
        client, messages=[{"role": "user", "content": [{"type": "text", "text": "yo"}]}]
    )
    assert chat["choices"][0]["message"]["content"] == "echo: yo"


async def test_default_call_tool_and_tool_result(client: TestClient[Any, Any]) -> None:
    text = 'call tool get_weather {"city": {"name": "Paris"}}'
    first = await rjson(client, input=text, tools=TOOLS_R)
    again = await rjson(client, input=text, tools=TOOLS_R)
    call = first["output"][0]
    assert (call["type"], call["name"], call["arguments"]) == (
        "function_call",
        "get_weather",
        '{"city": {"name": "Paris"}}',
    )
    assert call["call_id"] == again["output"][0]["call_id"]  # deterministic
    bare = await rjson(client, input="call tool get_weather", tools=TOOLS_R)
    assert bare["output"][0]["arguments"] == "{}"
    unknown = await rjson(client, input="call tool nope {}", tools=TOOLS_R)
    assert unknown["output"][0]["type"] == "message"
    chat = await cjson(client, messages=[{"role": "user", "content": text}], tools=TOOLS_C)
    assert chat["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    result = await rjson(
        client,
        input=[
            {"role": "user", "content": text},
            {"type": "function_call", "call_id": "c", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "sunny" * 100},
        ],
    )
    assert result["output"][0]["content"][0]["text"] == "tool result: " + ("sunny" * 100)[:200]
    chat = await cjson(
        client,
        messages=[
            {"role": "user", "content": "q"},
            {"role": "tool", "tool_call_id": "c", "content": "42"},
        ],
    )
    assert chat["choices"][0]["message"]["content"] == "tool result: 42"


async def test_default_directives(client: TestClient[Any, Any]) -> None:
    status, headers, raw = await post(
        client, "/v1/responses", {"model": "m", "input": "mock:status=429"}
    )
    assert (status, headers["Retry-After"]) == (429, "1")
    assert orjson.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    status, _, raw = await post(
        client,
        "/v1/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "mock:status=400 mock:context"}]},
    )
    assert (status, orjson.loads(raw)["error"]["code"]) == (400, "context_length_exceeded")
    status, _, raw = await post(client, "/v1/responses", {"model": "m", "input": "mock:malformed"})
    assert status == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)
    status, _, raw = await post(
        client, "/v1/responses", {"model": "m", "input": "mock:malformed", "stream": True}
    )
    with pytest.raises(orjson.JSONDecodeError):
        [orjson.loads(d) for _, d in parse_sse(raw)]
    reason = await rjson(client, input="mock:reason please")
    assert [o["type"] for o in reason["output"]] == ["reasoning", "message"]
    assert reason["output"][0]["encrypted_content"] and reason["output"][0]["summary"]
    delayed = await rjson(client, input="mock:delay=0.01 hi")
    assert delayed["output"][0]["content"][0]["text"] == "echo: mock:delay=0.01 hi"
    refused = await rjson(client, input="mock:refuse")
    assert refused["output"][0]["content"][0]["type"] == "refusal"
    failed = await rstream(client, input="mock:fail")
    assert failed[-1]["type"] == "response.failed"
    big = await rstream(client, input="mock:big=100000")
    deltas = [e["delta"] for e in big if e["type"] == "response.output_text.delta"]
    assert [len(d) for d in deltas] == [32768, 32768, 32768, 1696]
    assert "".join(deltas) == "x" * 100_000


async def test_default_max_tokens_truncation(client: TestClient[Any, Any]) -> None:
    cut = await rjson(client, input="one two three four", max_output_tokens=3)
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {
        "reason": "max_output_tokens"
    }
    assert cut["output"][0]["content"][0]["text"] == "echo: one two"
    whole = await rjson(client, input="one two", max_output_tokens=3)
    assert whole["status"] == "completed"
    chat = await cstream(client, messages=[{"role": "user", "content": "a b c d"}], max_tokens=2)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chat[:-2]) == "echo: a"
    assert chat[-2]["choices"][0]["finish_reason"] == "length"
    chat_json = await cjson(
        client, messages=[{"role": "user", "content": "a b c"}], max_completion_tokens=1
    )
    assert chat_json["choices"][0]["finish_reason"] == "length"


def test_default_script_is_pure() -> None:
    body = {"input": "call tool t", "tools": [{"type": "function", "name": "t"}]}
    assert default_script("responses", body) == default_script("responses", body)
    assert default_script("chat", {"messages": "junk"}).items == [
        Text("Hello from the mock upstream.")
    ]


def test_burst_directive_writes_a_stream_at_once() -> None:
    frames = [b"event: a\ndata: {}\n\n"] * 50
    plain = default_script("responses", {"input": "one two", "stream": True})
    burst = default_script("responses", {"input": "one mock:burst two", "stream": True})
    assert len(shape_writes(frames, plain)) == 50  # event by event
    assert shape_writes(frames, burst) == [b"".join(frames)]  # one write
    assert burst.items == [Text("echo: one mock:burst two")]


async def test_queue_is_fifo_then_default(client: TestClient[Any, Any], mock: MockUpstream) -> None:
    mock.enqueue(Script(items=[Text("one")]), Script(items=[Text("two")]))
    texts = [(await rjson(client, input="q"))["output"][0]["content"][0]["text"] for _ in range(3)]
    assert texts == ["one", "two", "echo: q"]


async def test_misc_endpoints(aiohttp_client: ClientFactory) -> None:
    mock = MockUpstream(model_echo=False)
    client = await aiohttp_client(mock.app)
    body = {"model": "gpt-4o", "input": "x" * 40}
    raw = orjson.dumps(body)
    async with client.post("/v1/responses/input_tokens", data=raw) as r:
        assert await r.json() == {"object": "response.input_tokens", "input_tokens": len(raw) // 4}
    async with client.get("/v1/models") as r:
        models = await r.json()
        assert models["object"] == "list" and {"id", "object", "created", "owned_by"} <= set(
            models["data"][0]
        )
    async with client.get("/healthz") as r:
        assert r.status == 200
    answer = await rjson(client, model="gpt-4o")
    assert answer["model"].startswith("gpt-4o-") and answer["model"] != "gpt-4o"


async def test_start_mock_serves_real_socket() -> None:
    mock = MockUpstream()
    runner, base = await start_mock(mock=mock)
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base)
        body = {"model": "m", "input": "ping"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(base + "/responses", json=body) as r,
        ):
            assert (await r.json())["output"][0]["content"][0]["text"] == "echo: ping"
    finally:
        await runner.cleanup()
    assert len(mock.requests) == 1
