"""Claude Code's auto-mode safety check (issue 13): verdicts for every tool call of an answer,
from one classifier call, in the shape and place Claude Code reads them, failing safe."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.mock_upstream import FunctionCall, Script, Text
from gateway.safeguards.prompt import (
    DEFAULT_PROMPT,
    classifier_input,
    classifier_payload,
    conversation,
    fit,
)
from gateway.safeguards.tap import SafeguardTap
from gateway.safeguards.verdicts import VERDICT_SCHEMA, ToolCall, parse_answer
from gateway.schemas.anthropic import REQUEST_DECODER
from gateway.settings import Route
from gateway.startup import StartupError
from tests.anthropic_grammar import check_stream, parse_frames
from tests.conftest import SIGNING_KEY, GatewayFactory, Upstream, make_settings

MODEL = "claude-sonnet-5-5"
CANARY = "CANARY-safeguards-77e1"
CONTEXT = {
    "v": 1,
    "permission_mode": "auto",
    "platform": "linux",
    "live_cwd": "/home/u/project",
    "home_dir": "/home/u",
    "trusted_directories": {"primary": {"path": "/home/u/project"}, "additional": []},
    "rules": {"allow": [{"rule": "Bash(npm test:*)", "source": "userSettings"}], "deny": []},
    "auto_mode": {"allow": [], "soft_deny": ["Never touch /srv"], "hard_deny": []},
    "git_state": {"cwd": "/home/u/project", "root": None, "status": "M a.py", "error": None},
    "rule_roots": {"userSettings": "/home/u/.claude"},
}
TOOLS = [
    {"name": "Bash", "description": "run", "input_schema": {"type": "object", "properties": {}}},
    {"name": "Write", "description": "write", "input_schema": {"type": "object", "properties": {}}},
]
RM = json.dumps({"command": "rm -rf /srv/data"})
WRITE = json.dumps({"file_path": "/home/u/project/a.txt", "content": "hi"})


def body(stream: bool = False, safeguards: bool = True, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 200,
        "stream": stream,
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": f"clean up the project {CANARY}"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "ASSISTANT PROSE: trust me, it is fine"},
                    {
                        "type": "tool_use",
                        "id": "toolu_old",
                        "name": "Bash",
                        "input": {"command": "ls"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_old",
                        "content": "TOOL OUTPUT: a.py",
                    },
                    {"type": "text", "text": "now remove the data"},
                ],
            },
        ],
        **extra,
    }
    if safeguards:
        doc["safeguards"] = [{"type": "dangerous_tool_use", "classifier_context": CONTEXT}]
    return doc


async def post(gw: TestServer, payload: Any) -> tuple[int, dict[str, Any] | bytes, float]:
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as s, s.post(gw.make_url("/v1/messages"), json=payload) as r:
        raw = await r.read()
        took = time.monotonic() - t0
        if r.content_type == "application/json":
            return r.status, json.loads(raw), took
        return r.status, raw, took


def classifier_requests(upstream: Upstream) -> list[Any]:
    out = []
    for r in upstream.mock.requests:
        b = r.body or {}
        fmt = (b.get("text") or {}).get("format") or {}
        rf = (b.get("response_format") or {}).get("json_schema") or {}
        if fmt.get("name") == "safeguard_verdicts" or rf.get("name") == "safeguard_verdicts":
            out.append(r)
    return out


def answer_with_two_calls() -> Script:
    return Script(
        items=[
            Text("Removing it."),
            FunctionCall("Bash", RM, call_id="call_rm"),
            FunctionCall("Write", WRITE, call_id="call_write"),
        ]
    )


FLAGGED = {
    "type": "evaluated",
    "outcome": "flagged",
    "explanation": "Irreversible destructive command the user did not ask for.",
}
NOT_FLAGGED = {"type": "evaluated", "outcome": "not_flagged", "explanation": "Routine action."}


def available(tool_uses: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "dangerous_tool_use", "status": {"type": "available", "tool_uses": tool_uses}}]


# ---------------------------------------------------------------------------------------------
# Non-streamed


async def test_verdicts_at_the_top_level_keyed_by_the_clients_ids(
    gateway: TestServer, upstream: Upstream, log_lines: list[str]
) -> None:
    upstream.mock.enqueue(answer_with_two_calls())
    status, doc, _ = await post(gateway, body())
    assert status == 200
    assert isinstance(doc, dict)
    ids = [b["id"] for b in doc["content"] if b["type"] == "tool_use"]
    assert ids == ["call_rm", "call_write"]
    assert doc["safeguard_results"] == available({"call_rm": FLAGGED, "call_write": NOT_FLAGGED})
    # the main request never carries the field; one classifier request judged both calls
    main = [r for r in upstream.mock.requests if r not in classifier_requests(upstream)]
    assert len(main) == 1 and "safeguards" not in main[0].body
    (cls,) = classifier_requests(upstream)
    assert cls.body["model"] == "gpt-5-mini"  # the small model of the request's route
    assert cls.body["instructions"] == DEFAULT_PROMPT
    text = cls.body["input"][0]["content"][0]["text"]
    assert "now remove the data" in text and '"name":"ls"' not in text
    assert '{"tool_call":{"name":"Bash","input":{"command":"ls"}}}' in text
    assert "ASSISTANT PROSE" not in text and "TOOL OUTPUT" not in text
    rm_line = '{"id":"call_rm","name":"Bash","input":{"command":"rm -rf /srv/data"}}'
    write_line = '{"id":"call_write","name":"Write","input":' + WRITE.replace(" ", "") + "}"
    assert text.endswith(f"Tool calls to classify:\n{rm_line}\n{write_line}")
    assert all(CANARY not in line for line in log_lines)


async def test_no_tool_calls_no_classifier(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(Script(items=[Text("nothing to do")]))
    status, doc, _ = await post(gateway, body())
    assert status == 200 and isinstance(doc, dict)
    assert doc["safeguard_results"] == available({})
    assert classifier_requests(upstream) == []


async def test_without_safeguards_the_answer_has_no_results(
    gateway: TestServer, upstream: Upstream
) -> None:
    upstream.mock.enqueue(answer_with_two_calls())
    status, doc, _ = await post(gateway, body(safeguards=False))
    assert status == 200 and isinstance(doc, dict)
    assert "safeguard_results" not in doc
    assert classifier_requests(upstream) == []


# ---------------------------------------------------------------------------------------------
# Streamed


async def test_stream_holds_only_the_final_message_delta(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway()
    upstream.mock.enqueue(answer_with_two_calls())
    upstream.mock.classifier_queue.append(
        Script(
            items=[Text(json.dumps({"verdicts": [
                {"id": "call_rm", "flagged": True, "explanation": "no"},
                {"id": "call_write", "flagged": False, "explanation": "ok"},
            ]}))],
            delay_before_headers=0.6,
        )
    )  # fmt: skip
    seen: list[tuple[float, bytes]] = []
    t0 = time.monotonic()
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.make_url("/v1/messages"), json=body(stream=True)) as r,
    ):
        assert r.status == 200
        async for chunk in r.content.iter_any():
            seen.append((time.monotonic() - t0, chunk))
    raw = b"".join(c for _, c in seen)
    events = parse_frames(raw)
    check_stream(events)
    names = [e for e, _ in events]
    assert names[-2:] == ["message_delta", "message_stop"]
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["delta"]["safeguard_results"] == available(
        {
            "call_rm": {"type": "evaluated", "outcome": "flagged", "explanation": "no"},
            "call_write": {"type": "evaluated", "outcome": "not_flagged", "explanation": "ok"},
        }
    )
    # text and tool deltas went out before the classifier answered; the end waited for it
    first_delta = next(t for t, c in seen if b"content_block_delta" in c)
    last = next(t for t, c in seen if b"message_delta" in c)
    assert first_delta < 0.45 <= 0.6 <= last + 0.05


async def test_sdk_accumulates_a_stream_with_verdicts(
    gateway: TestServer, upstream: Upstream
) -> None:
    upstream.mock.enqueue(answer_with_two_calls())
    client = anthropic.AsyncAnthropic(
        base_url=str(gateway.make_url("")), api_key="k", max_retries=0
    )
    payload = body()
    async with client.messages.stream(
        model=MODEL,
        max_tokens=200,
        messages=payload["messages"],
        tools=payload["tools"],
        extra_body={"safeguards": payload["safeguards"]},
    ) as stream:
        message = await stream.get_final_message()
    await client.close()
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.stop_reason == "tool_use"


# ---------------------------------------------------------------------------------------------
# Fail safe


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (Script(status=500), "error"),
        (Script(items=[Text("I think both are fine.")]), "error"),
        (Script(items=[Text("late")], delay_before_headers=5), "timeout"),
        (Script(status=400, error_code="context_length_exceeded"), "input_too_long"),
    ],
    ids=["upstream-500", "not-json", "timeout", "too-long"],
)
async def test_classifier_failure_is_unavailable_never_an_approval(
    make_gateway: GatewayFactory,
    upstream: Upstream,
    log_lines: list[str],
    script: Script,
    reason: str,
) -> None:
    gw = await make_gateway(safeguards={"timeout": 0.5})
    upstream.mock.enqueue(answer_with_two_calls())
    upstream.mock.classifier_queue.append(script)
    status, doc, took = await post(gw, body())
    assert status == 200 and isinstance(doc, dict)
    verdict = {"type": "unavailable", "reason": reason}
    assert doc["safeguard_results"] == available({"call_rm": verdict, "call_write": verdict})
    assert took < 2.0
    warnings = [json.loads(x) for x in log_lines if '"safeguard_unavailable"' in x]
    assert [(w["level"], w["count"], w["reason"]) for w in warnings] == [
        ("warning", 2, f"unavailable_{reason}")
    ]
    assert all(CANARY not in line for line in log_lines)


async def test_a_verdict_the_classifier_left_out_is_unavailable(
    gateway: TestServer, upstream: Upstream
) -> None:
    upstream.mock.enqueue(answer_with_two_calls())
    upstream.mock.classifier_queue.append(
        Script(items=[Text('```json\n{"verdicts":[{"id":"call_write","flagged":false,'
                           '"explanation":"ok"},{"id":"call_other","flagged":false,'
                           '"explanation":"?"}]}\n```')])
    )  # fmt: skip
    _, doc, _ = await post(gateway, body())
    assert isinstance(doc, dict)
    assert doc["safeguard_results"] == available(
        {
            "call_rm": {"type": "unavailable", "reason": "error"},
            "call_write": {"type": "evaluated", "outcome": "not_flagged", "explanation": "ok"},
        }
    )


async def test_a_call_cut_by_max_tokens_is_not_judged(
    gateway: TestServer, upstream: Upstream
) -> None:
    upstream.mock.enqueue(
        Script(
            items=[
                FunctionCall("Write", WRITE, call_id="call_a"),
                FunctionCall("Bash", RM, call_id="call_b"),
            ],
            end="incomplete",
        )
    )
    _, doc, _ = await post(gateway, body())
    assert isinstance(doc, dict)
    assert doc["stop_reason"] == "max_tokens"
    assert doc["safeguard_results"] == available(
        {"call_a": NOT_FLAGGED, "call_b": {"type": "unavailable", "reason": "truncated"}}
    )


# ---------------------------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize("where", ["global", "route"])
async def test_disabled_says_so(
    make_gateway: GatewayFactory, upstream: Upstream, where: str
) -> None:
    if where == "global":
        gw = await make_gateway(safeguards={"enabled": False})
    else:
        gw = await make_gateway(routes=[{"match": ["*"], "model": "big", "safeguards": False}])
    upstream.mock.enqueue(answer_with_two_calls())
    _, doc, _ = await post(gw, body())
    assert isinstance(doc, dict)
    assert doc["safeguard_results"] == [
        {"type": "dangerous_tool_use", "status": {"type": "unavailable", "reason": "disabled"}}
    ]
    assert classifier_requests(upstream) == []


async def test_classifier_model_and_prompt_file(
    make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path
) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Our own rules. Answer JSON.\n")
    gw = await make_gateway(
        safeguards={"model": "claude-haiku-5-5", "prompt_file": str(prompt)},
        models={"small": "tiny-judge"},
    )
    upstream.mock.enqueue(answer_with_two_calls())
    await post(gw, body())
    (cls,) = classifier_requests(upstream)
    assert (cls.body["model"], cls.body["instructions"]) == (
        "tiny-judge",
        "Our own rules. Answer JSON.",
    )


def test_missing_prompt_file_stops_start_up(upstream: Upstream) -> None:
    settings = make_settings(upstream.url, safeguards={"prompt_file": "/nonexistent/p.txt"})
    with pytest.raises(StartupError, match=r"safeguards\.prompt_file"):
        create_app(settings, env={}, signing_key=SIGNING_KEY)


async def test_chat_route_classifier_uses_response_format(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    chat = {"base_url": upstream.url, "api_key_env": "TEST_UPSTREAM_KEY", "dialect": "chat"}
    gw = await make_gateway(upstreams={"default": chat})
    upstream.mock.enqueue(answer_with_two_calls())
    _, doc, _ = await post(gw, body(stream=False))
    assert isinstance(doc, dict)
    assert doc["safeguard_results"] == available({"call_rm": FLAGGED, "call_write": NOT_FLAGGED})
    (cls,) = classifier_requests(upstream)
    assert cls.path == "/v1/chat/completions"
    assert cls.body["response_format"]["json_schema"]["schema"] == VERDICT_SCHEMA
    assert cls.body["messages"][0] == {"role": "system", "content": DEFAULT_PROMPT}


async def test_metrics_count_verdicts(gateway: TestServer, upstream: Upstream) -> None:
    upstream.mock.enqueue(answer_with_two_calls())
    await post(gateway, body())
    async with aiohttp.ClientSession() as s, s.get(gateway.make_url("/metrics")) as r:
        text = await r.text()
    assert 'gateway_safeguard_verdicts_total{outcome="flagged"} 1.0' in text
    assert 'gateway_safeguard_verdicts_total{outcome="not_flagged"} 1.0' in text
    assert "gateway_safeguard_classifier_seconds_count 1.0" in text


# ---------------------------------------------------------------------------------------------
# Pure parts


def test_parse_answer() -> None:
    calls = [ToolCall("a", "Bash", {}), ToolCall("b", "Write", {})]
    text = 'Sure! {"verdicts": [{"id": "a", "flagged": true, "explanation": "bad"}, {"id": "b"}]}'
    assert parse_answer(text, calls) == {
        "a": {"type": "evaluated", "outcome": "flagged", "explanation": "bad"},
        "b": {"type": "unavailable", "reason": "error"},
    }
    assert parse_answer("no json here", calls) is None
    assert parse_answer('{"verdict": []}', calls) is None
    long = "x" * 5000
    got = parse_answer(
        json.dumps({"verdicts": [{"id": "a", "flagged": False, "explanation": long}]}), calls
    )
    assert got is not None and len(got["a"]["explanation"]) == 1000


def test_classifier_input_shows_user_turns_and_calls_only() -> None:
    req = REQUEST_DECODER.decode(json.dumps(body()).encode())
    text = classifier_input(
        req.messages, CONTEXT, [ToolCall("t1", "Bash", {"command": "rm -rf x"})], 24000
    )
    env = json.loads(text.splitlines()[1])
    keys = ("permission_mode", "platform", "live_cwd", "home_dir", "trusted_directories")
    expected = {k: CONTEXT[k] for k in (*keys, "rules", "auto_mode")}
    expected["git_state"] = {"cwd": "/home/u/project", "root": None}
    assert env == expected
    assert conversation(req.messages) == [
        json.dumps({"user": f"clean up the project {CANARY}"}, separators=(",", ":")),
        '{"tool_call":{"name":"Bash","input":{"command":"ls"}}}',
        '{"user":"now remove the data"}',
    ]


def test_fit_keeps_the_first_and_latest_lines() -> None:
    lines = [f"line {i} " + "x" * 90 for i in range(100)]
    kept = fit(lines, 1000)
    assert kept[0] == lines[0]
    assert kept[1] == '{"note": "earlier turns omitted"}'
    assert kept[-1] == lines[-1]
    assert sum(len(x) + 1 for x in kept) <= 1000 + len(kept[1]) + 1


def test_payloads() -> None:
    responses = Route(name="default:m", dialect="responses", base_url="x", api_key=None,
                      headers={}, upstream_model="m")  # fmt: skip
    doc = classifier_payload(responses, "P", "T")
    assert doc == {
        "model": "m",
        "instructions": "P",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "T"}]}],
        "text": {
            "format": {
                "type": "json_schema",
                "name": "safeguard_verdicts",
                "strict": True,
                "schema": VERDICT_SCHEMA,
            }
        },
        "max_output_tokens": 4096,
        "store": False,
        "stream": False,
        "reasoning": {"effort": "low"},
    }
    chat = Route(name="local:q", dialect="chat", base_url="x", api_key=None, headers={},
                 upstream_model="q", reasoning=False, max_tokens_field="max_tokens")  # fmt: skip
    assert classifier_payload(chat, "P", "T")["max_tokens"] == 4096


def test_tap_passes_deltas_and_holds_the_end() -> None:
    tap = SafeguardTap()
    start = (
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,'
        b'"content_block":{"type":"tool_use","id":"toolu_1","name":"Bash","input":{}}}\n\n'
    )
    deltas = b"".join(
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
        b'"delta":{"type":"input_json_delta","partial_json":' + json.dumps(p).encode() + b"}}\n\n"
        for p in ['{"comm', 'and": "ls"}']
    )
    end = (
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use",'
        b'"stop_sequence":null},"usage":{"output_tokens":5}}\n\n'
    )
    stop = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    assert tap.feed(start) == start
    assert tap.feed(deltas) == deltas
    stop_frame = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}\n\n'
    assert tap.feed(end) == stop_frame
    assert tap.feed(stop) == b""
    assert tap.stop_reason == "tool_use"
    assert tap.tool_calls() == ([ToolCall("toolu_1", "Bash", {"command": "ls"})], [])
    out = tap.release([{"type": "dangerous_tool_use"}])
    assert out == (
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use",'
        b'"stop_sequence":null,"safeguard_results":[{"type":"dangerous_tool_use"}]},'
        b'"usage":{"output_tokens":5}}\n\n' + stop
    )
    broken = SafeguardTap()
    broken.feed(start.replace(b"toolu_1", b"toolu_2"))
    broken.feed(deltas.split(b"\n\n")[0] + b"\n\n")
    assert broken.tool_calls() == ([], ["toolu_2"])


async def test_the_wait_is_ended_by_shutdown(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    from gateway.keys import LIFECYCLE

    gw = await make_gateway(safeguards={"timeout": 30})
    upstream.mock.enqueue(answer_with_two_calls())
    upstream.mock.classifier_queue.append(Script(items=[Text("{}")], delay_before_headers=30))
    task = asyncio.create_task(post(gw, body()))
    await asyncio.sleep(0.5)
    gw.app[LIFECYCLE].end_all()
    _, doc, took = await task
    assert isinstance(doc, dict)
    verdict = {"type": "unavailable", "reason": "timeout"}
    assert doc["safeguard_results"] == available({"call_rm": verdict, "call_write": verdict})
    assert took < 2


async def test_the_classifier_falls_back_with_its_route(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """Issue 16: a route whose primary is down judges on its fallback, as it answers there."""
    from tests.failover.conftest import dead_url

    gw = await make_gateway(
        upstreams={"down": {"base_url": dead_url(), "api_key_env": "TEST_UPSTREAM_KEY"},
                   "default": {"base_url": upstream.url, "api_key_env": "TEST_UPSTREAM_KEY"}},
        routes=[{"match": ["*"], "model": "gpt-5", "upstream": "down",
                 "fallbacks": [{"upstream": "default", "model": "gpt-5-spare"}]}],
    )  # fmt: skip
    upstream.mock.enqueue(answer_with_two_calls())
    status, doc, _ = await post(gw, body())
    assert status == 200 and isinstance(doc, dict)
    assert doc["safeguard_results"] == available({"call_rm": FLAGGED, "call_write": NOT_FLAGGED})
    (cls,) = classifier_requests(upstream)
    assert cls.body["model"] == "gpt-5-spare"  # the fallback target's own model
