"""OpenTelemetry traces (issue 18 item 4): one SERVER span per request, one CLIENT span per
upstream attempt with ``traceparent`` sent upstream, the classifier's span; nothing secret in
any attribute; nothing at all when tracing is off (the default).

Real app over real sockets in front of the mock upstream, the official SDK as the client, spans
collected by an in-memory exporter."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway import __version__
from gateway.app import create_app
from gateway.config import load_settings
from gateway.keys import TRACING
from gateway.mock_upstream import Script, Text
from gateway.startup import StartupError
from tests.conftest import (
    SIGNING_KEY,
    UPSTREAM_KEY,
    UPSTREAM_KEY_ENV,
    GatewayFactory,
    Upstream,
    make_settings,
)
from tests.test_safeguards import answer_with_two_calls, body, classifier_requests

ROOT = Path(__file__).resolve().parents[1]
MODEL = "claude-sonnet-5-5"
CLIENT_KEY = "sk-ant-client-TRACE-CANARY-4242"
CANARY = "CANARY-prompt-3f9d"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"

Traced = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(aiohttp_server: Any, upstream: Upstream, exporter: InMemorySpanExporter) -> Traced:
    """A gateway with tracing on, its spans in ``exporter``; ``sections`` as make_gateway's."""

    async def factory(env: dict[str, str] | None = None, **sections: Any) -> TestServer:
        tracing = {"enabled": True, **sections.pop("tracing", {})}
        settings = make_settings(upstream.url, tracing=tracing, **sections)
        app = create_app(
            settings,
            env={UPSTREAM_KEY_ENV: UPSTREAM_KEY, **(env or {})},
            signing_key=SIGNING_KEY,
            tracing_exporter=exporter,
        )
        server: TestServer = await aiohttp_server(app)
        return server

    return factory


def sdk_for(gw: TestServer, key: str = "k") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=str(gw.make_url("")), api_key=key, max_retries=0)


def of_kind(spans: Sequence[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.kind == kind), key=lambda s: s.start_time or 0)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
            for k, v in (span.attributes or {}).items()}  # fmt: skip


def header(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


def traceparent(headers: dict[str, str]) -> tuple[int, int, bool]:
    """The W3C header's trace id, parent span id, and sampled flag (other flag bits, such as
    Level 2's "random trace id", are not this gateway's business)."""
    value = header(headers, "traceparent")
    assert value is not None
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00"
    return int(trace_id, 16), int(span_id, 16), bool(int(flags, 16) & 1)


def chat_requests(upstream: Upstream) -> list[Any]:
    return [
        r for r in upstream.mock.requests if r.path.endswith(("/responses", "/chat/completions"))
    ]


def check_client_span(span: ReadableSpan, server: ReadableSpan) -> None:
    assert span.parent is not None and span.context is not None and server.context is not None
    assert span.context.trace_id == server.context.trace_id
    assert span.parent.span_id == server.context.span_id


# ---------------------------------------------------------------------------------------------
# A request's spans


async def test_non_streamed_request_one_server_span_and_a_client_span_per_attempt(
    traced: Traced, upstream: Upstream, exporter: InMemorySpanExporter
) -> None:
    gw = await traced(env={"GATEWAY_API_KEYS": CLIENT_KEY}, retries={"max_attempts": 2})
    upstream.mock.enqueue(Script(status=503, headers={"retry-after-ms": "10"}))
    upstream.mock.enqueue(
        Script(items=[Text("hi")], usage={"input_tokens": 12, "output_tokens": 3})
    )
    async with sdk_for(gw, CLIENT_KEY) as client:
        raw = await client.messages.with_raw_response.create(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hello"}]
        )
        message = await raw.parse()
    assert message.usage.input_tokens == 12 and message.usage.output_tokens == 3
    first, second = chat_requests(upstream)
    upstream_model = second.body["model"]

    spans = exporter.get_finished_spans()
    (server,) = of_kind(spans, SpanKind.SERVER)
    assert server.name == f"chat {MODEL}"
    assert server.parent is None  # no traceparent from the client: a new trace
    assert server.status.status_code == StatusCode.UNSET
    got = attrs(server)
    route = got.pop("messages_gateway.route")
    assert route.endswith(":" + upstream_model)
    assert got == {
        "http.request.method": "POST",
        "http.route": "/v1/messages",
        "url.path": "/v1/messages",
        "http.response.status_code": 200,
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": upstream_model,
        "gen_ai.usage.input_tokens": message.usage.input_tokens,
        "gen_ai.usage.output_tokens": message.usage.output_tokens,
        "gen_ai.response.finish_reasons": (message.stop_reason,),
        "messages_gateway.correlation_id": raw.headers["request-id"],
        "messages_gateway.request_id": raw.headers["request-id"],
        "messages_gateway.target": route,
        "messages_gateway.key_name": "anonymous",
        "messages_gateway.stream": False,
        "messages_gateway.attempts": 2,
        "messages_gateway.outcome": "completed",
    }
    assert server.resource.attributes["service.name"] == "messages-gateway"
    assert server.resource.attributes["service.version"] == __version__

    # one CLIENT span per attempt, children of the SERVER span, each one's traceparent upstream
    clients = of_kind(spans, SpanKind.CLIENT)
    assert len(clients) == 2 and len(spans) == 3
    for attempt, (span, recorded) in enumerate(zip(clients, (first, second), strict=True), 1):
        check_client_span(span, server)
        assert span.name == f"chat {upstream_model}"
        assert span.context is not None
        a = attrs(span)
        assert a["server.address"] == "127.0.0.1"
        assert a["server.port"] == upstream.server.port
        assert a["http.request.method"] == "POST"
        assert a["url.path"] == "/v1/responses"
        assert a["messages_gateway.attempt"] == attempt
        assert a["messages_gateway.target"] == route
        assert a["gen_ai.request.model"] == upstream_model
        assert traceparent(recorded.headers) == (span.context.trace_id, span.context.span_id, True)
    assert attrs(clients[0])["http.response.status_code"] == 503
    assert attrs(clients[0])["error.type"] == "503"
    assert clients[0].status.status_code == StatusCode.ERROR
    assert attrs(clients[1])["http.response.status_code"] == 200
    assert "error.type" not in attrs(clients[1])
    assert clients[0].end_time is not None and clients[1].start_time is not None
    assert clients[0].end_time <= clients[1].start_time  # the retry came after the first
    assert server.start_time is not None and server.end_time is not None
    assert server.start_time <= clients[0].start_time  # type: ignore[operator]
    assert clients[1].end_time <= server.end_time  # type: ignore[operator]


async def test_streamed_request_span_ends_with_the_stream(
    traced: Traced, upstream: Upstream, exporter: InMemorySpanExporter
) -> None:
    gw = await traced()
    delay = 0.05
    upstream.mock.enqueue(
        Script(
            items=[Text("one two three four")],
            usage={"input_tokens": 20, "output_tokens": 7},
            delay_between_events=delay,
        )
    )
    t0 = time.time_ns()
    async with (
        sdk_for(gw) as client,
        client.messages.stream(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "count"}]
        ) as stream,
    ):
        events = [event.type async for event in stream]
        message = await stream.get_final_message()
    t1 = time.time_ns()
    assert events[-1] == "message_stop"
    (recorded,) = chat_requests(upstream)

    spans = exporter.get_finished_spans()
    (server,) = of_kind(spans, SpanKind.SERVER)
    (client_span,) = of_kind(spans, SpanKind.CLIENT)
    check_client_span(client_span, server)
    got = attrs(server)
    assert got["messages_gateway.stream"] is True
    assert got["http.response.status_code"] == 200
    assert got["messages_gateway.outcome"] == "completed"
    assert got["gen_ai.response.model"] == recorded.body["model"]
    # usage and stop reason arrive with the stream's last events: the span outlived them
    assert got["gen_ai.usage.input_tokens"] == message.usage.input_tokens == 20
    assert got["gen_ai.usage.output_tokens"] == message.usage.output_tokens == 7
    assert got["gen_ai.response.finish_reasons"] == ("end_turn",) == (message.stop_reason,)
    assert server.start_time is not None and server.end_time is not None
    assert t0 <= server.start_time and server.end_time <= t1
    # the upstream's events came `delay` apart (several of them): the span lasted the stream
    upstream_events = 6
    assert server.end_time - server.start_time >= upstream_events * delay * 1e9
    # the CLIENT span covers the attempt up to the upstream's headers (as aiohttp's own
    # instrumentation does); the body is read inside the SERVER span
    assert client_span.end_time is not None and client_span.end_time < server.end_time


async def test_cached_input_counts_in_input_tokens(
    traced: Traced, upstream: Upstream, exporter: InMemorySpanExporter
) -> None:
    """GenAI conventions: ``gen_ai.usage.input_tokens`` includes cached input, which Anthropic's
    ``input_tokens`` leaves out; the cached part has its own attribute."""
    gw = await traced()
    upstream.mock.enqueue(
        Script(
            items=[Text("hi")], usage={"input_tokens": 50, "cached_tokens": 30, "output_tokens": 2}
        )
    )
    async with sdk_for(gw) as client:
        message = await client.messages.create(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hello"}]
        )
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (20, 30)
    (server,) = of_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    got = attrs(server)
    assert got["gen_ai.usage.input_tokens"] == 50
    assert got["gen_ai.usage.cache_read.input_tokens"] == 30
    assert "gen_ai.usage.cache_creation.input_tokens" not in got


# ---------------------------------------------------------------------------------------------
# Propagation


async def test_client_traceparent_is_continued_upstream(
    traced: Traced, upstream: Upstream, exporter: InMemorySpanExporter
) -> None:
    gw = await traced(tracing={"sample_ratio": 0.0})  # the client's sampled flag still wins
    upstream.mock.enqueue(Script(items=[Text("hi")]))
    async with sdk_for(gw) as client:
        await client.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": "hello"}],
            extra_headers={
                "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                "tracestate": "vendor=opaque",
            },
        )
    spans = exporter.get_finished_spans()
    (server,) = of_kind(spans, SpanKind.SERVER)
    (client_span,) = of_kind(spans, SpanKind.CLIENT)
    assert server.context is not None and server.parent is not None
    assert server.context.trace_id == int(TRACE_ID, 16)
    assert server.parent.span_id == int(PARENT_ID, 16) and server.parent.is_remote
    assert client_span.context is not None and client_span.parent is not None
    assert client_span.parent.span_id == server.context.span_id
    (recorded,) = chat_requests(upstream)
    assert header(recorded.headers, "traceparent") == (
        f"00-{TRACE_ID}-{client_span.context.span_id:016x}-01"
    )
    assert header(recorded.headers, "tracestate") == "vendor=opaque"


async def test_unsampled_requests_export_nothing_but_still_propagate(
    traced: Traced, upstream: Upstream, exporter: InMemorySpanExporter
) -> None:
    gw = await traced(tracing={"sample_ratio": 0.0})
    upstream.mock.enqueue(Script(items=[Text("hi")]))
    async with sdk_for(gw) as client:
        await client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hello"}]
        )
    assert exporter.get_finished_spans() == ()
    (recorded,) = chat_requests(upstream)
    sampled = traceparent(recorded.headers)[2]
    assert sampled is False  # the upstream is told: the decision travels with the trace


async def test_health_probes_are_not_traced(traced: Traced, exporter: InMemorySpanExporter) -> None:
    gw = await traced()
    async with aiohttp.ClientSession() as s:
        for path in ("/healthz", "/readyz", "/v1/models", "/no/such/path"):
            async with s.get(gw.make_url(path)) as r:
                await r.read()
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["GET", "GET /v1/models"]  # an unmatched path: the method alone


# ---------------------------------------------------------------------------------------------
# Nothing secret


def all_values(spans: Sequence[ReadableSpan]) -> list[str]:
    out: list[str] = []
    for span in spans:
        out.append(span.name)
        for mapping in (span.attributes, span.resource.attributes):
            for key, value in (mapping or {}).items():
                out.append(key)
                out.extend(map(str, value) if isinstance(value, tuple | list) else [str(value)])
        for event in span.events:
            out.append(event.name)
            out.extend(str(v) for v in (event.attributes or {}).values())
    return out


async def test_no_prompt_text_and_no_key_in_any_span(
    traced: Traced, upstream: Upstream, exporter: InMemorySpanExporter
) -> None:
    gw = await traced(env={"GATEWAY_API_KEYS": CLIENT_KEY})
    messages: Any = [
        {"role": "user", "content": f"look at this {CANARY}"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": f"file {CANARY}"}
            ],
        },
    ]
    tools: Any = [{"name": "Read", "description": "read", "input_schema": {"type": "object"}}]
    upstream.mock.enqueue(Script(items=[Text(f"echo {CANARY}")]))
    upstream.mock.enqueue(Script(status=400, error_message=f"bad input {CANARY} {UPSTREAM_KEY}"))
    async with sdk_for(gw, CLIENT_KEY) as client:
        await client.messages.create(model=MODEL, max_tokens=100, messages=messages, tools=tools)
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(model=MODEL, max_tokens=100, messages=messages)
        async with client.messages.stream(
            model=MODEL, max_tokens=100, messages=messages, tools=tools
        ) as stream:
            await stream.get_final_message()
    with pytest.raises(anthropic.AuthenticationError):
        async with sdk_for(gw, CLIENT_KEY + "-wrong") as client:
            await client.messages.create(model=MODEL, max_tokens=10, messages=messages)
    spans = exporter.get_finished_spans()
    assert len(of_kind(spans, SpanKind.SERVER)) == 4
    values = all_values(spans)
    for secret in (CANARY, UPSTREAM_KEY, CLIENT_KEY, "sk-upstream", "sk-ant-client"):
        assert not [v for v in values if secret in v], secret
    # and the upstream did get what it needed: the key, the prompt
    assert all(header(r.headers, "authorization") == f"Bearer {UPSTREAM_KEY}"
               for r in chat_requests(upstream))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Errors


async def test_an_upstream_400_is_an_invalid_request_error_span(
    traced: Traced, upstream: Upstream, exporter: InMemorySpanExporter
) -> None:
    gw = await traced()
    upstream.mock.enqueue(Script(status=400))
    async with sdk_for(gw) as client:
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(
                model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
    spans = exporter.get_finished_spans()
    (server,) = of_kind(spans, SpanKind.SERVER)
    got = attrs(server)
    assert got["error.type"] == "invalid_request_error"
    assert got["http.response.status_code"] == 400
    assert got["messages_gateway.outcome"] == "error"
    assert "gen_ai.response.model" not in got  # no target answered
    assert server.status.status_code == StatusCode.UNSET  # a client error, not the server's
    (client_span,) = of_kind(spans, SpanKind.CLIENT)
    assert attrs(client_span)["error.type"] == "400"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_5xx_answer_is_an_error_span(
    traced: Traced, upstream: Upstream, exporter: InMemorySpanExporter, stream: bool
) -> None:
    gw = await traced()
    upstream.mock.enqueue(Script(status=500))
    async with sdk_for(gw) as client:
        with pytest.raises(anthropic.InternalServerError) as caught:
            await client.messages.create(
                model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}],
                stream=stream,
            )  # fmt: skip
    (server,) = of_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    got = attrs(server)
    assert got["http.response.status_code"] == caught.value.status_code >= 500
    assert got["error.type"] == "api_error"
    assert server.status.status_code == StatusCode.ERROR


async def test_unreachable_upstream_client_span_names_the_cause(
    traced: Traced, exporter: InMemorySpanExporter
) -> None:
    gw = await traced(upstreams={"default": {"base_url": "http://127.0.0.1:9/v1",
                                             "api_key_env": UPSTREAM_KEY_ENV}})  # fmt: skip
    async with sdk_for(gw) as client:
        with pytest.raises(anthropic.APIStatusError):
            await client.messages.create(
                model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
    spans = exporter.get_finished_spans()
    (client_span,) = of_kind(spans, SpanKind.CLIENT)
    assert attrs(client_span)["error.type"] == "connection refused"
    assert "http.response.status_code" not in attrs(client_span)
    assert client_span.status.status_code == StatusCode.ERROR


# ---------------------------------------------------------------------------------------------
# The safeguards classifier


async def post(gw: TestServer, payload: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.post(gw.make_url("/v1/messages"), json=payload) as r:
        assert r.status == 200
        doc: dict[str, Any] = await r.json()
        return doc


async def test_the_classifier_call_is_a_child_span(
    traced: Traced, upstream: Upstream, exporter: InMemorySpanExporter
) -> None:
    gw = await traced()
    upstream.mock.enqueue(answer_with_two_calls())
    doc = await post(gw, body())
    assert doc["safeguard_results"][0]["status"]["type"] == "available"
    spans = exporter.get_finished_spans()
    (server,) = of_kind(spans, SpanKind.SERVER)
    (judge,) = of_kind(spans, SpanKind.INTERNAL)
    main, cls = of_kind(spans, SpanKind.CLIENT)
    assert server.context is not None and judge.context is not None and judge.parent is not None
    assert judge.name == "safeguards classifier"
    assert judge.parent.span_id == server.context.span_id
    assert attrs(judge) == {
        "messages_gateway.safeguards.calls": 2,
        "messages_gateway.safeguards.flagged": 1,
        "messages_gateway.safeguards.not_flagged": 1,
    }
    assert judge.status.status_code == StatusCode.UNSET
    check_client_span(main, server)
    assert cls.parent is not None and cls.parent.span_id == judge.context.span_id
    (recorded,) = classifier_requests(upstream)
    assert cls.name == f"chat {recorded.body['model']}"
    assert cls.context is not None
    assert traceparent(recorded.headers) == (cls.context.trace_id, cls.context.span_id, True)
    assert all(CANARY not in v and "CANARY-safeguards" not in v for v in all_values(spans))


async def test_an_unavailable_classifier_says_why(
    traced: Traced, upstream: Upstream, exporter: InMemorySpanExporter
) -> None:
    gw = await traced(safeguards={"timeout": 0.3})
    upstream.mock.enqueue(answer_with_two_calls())
    upstream.mock.classifier_queue.append(Script(items=[Text("late")], delay_before_headers=3))
    await post(gw, body())
    spans = exporter.get_finished_spans()
    (judge,) = of_kind(spans, SpanKind.INTERNAL)
    assert attrs(judge) == {
        "messages_gateway.safeguards.calls": 2,
        "messages_gateway.safeguards.unavailable": 2,
        "error.type": "timeout",
    }
    assert judge.status.status_code == StatusCode.ERROR
    # the attempt cut by the timeout still ends (as cancelled), under the classifier's span
    cls = [s for s in of_kind(spans, SpanKind.CLIENT) if s.parent and judge.context
           and s.parent.span_id == judge.context.span_id]  # fmt: skip
    assert [attrs(s)["error.type"] for s in cls] == ["cancelled"]


# ---------------------------------------------------------------------------------------------
# Off by default; on without OpenTelemetry; exported over OTLP


async def test_disabled_by_default_no_tracer_nothing_exported(
    aiohttp_server: Any, upstream: Upstream, exporter: InMemorySpanExporter
) -> None:
    settings = make_settings(upstream.url)
    assert settings.tracing.enabled is False
    app = create_app(
        settings,
        env={UPSTREAM_KEY_ENV: UPSTREAM_KEY},
        signing_key=SIGNING_KEY,
        tracing_exporter=exporter,
    )
    gw = await aiohttp_server(app)
    upstream.mock.enqueue(Script(items=[Text("hi")]))
    async with sdk_for(gw) as client:
        await client.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        )
    assert app[TRACING].tracer is None and app[TRACING].provider is None
    assert exporter.get_finished_spans() == ()
    (recorded,) = chat_requests(upstream)
    assert header(recorded.headers, "traceparent") is None


def test_disabled_tracing_never_imports_opentelemetry() -> None:
    """A whole request through the app with tracing off, in a fresh interpreter."""
    code = """
import asyncio, sys
import aiohttp
from aiohttp import web
from gateway.app import create_app, make_runner
from gateway.settings import Settings

async def main():
    app = create_app(Settings(mock=True), env={}, signing_key=b"k" * 32)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    body = {"model": "claude-sonnet-5-5", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{port}/v1/messages", json=body) as r:
            assert r.status == 200, r.status
            await r.read()
    await runner.cleanup()

asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
sys.exit(f"imported: {loaded}" if loaded else 0)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:] or result.stdout


def test_enabled_without_opentelemetry_is_a_startup_error(
    monkeypatch: pytest.MonkeyPatch, upstream: Upstream
) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "opentelemetry"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    settings = make_settings(upstream.url, tracing={"enabled": True})
    with pytest.raises(StartupError) as caught:
        create_app(settings, env={UPSTREAM_KEY_ENV: UPSTREAM_KEY}, signing_key=SIGNING_KEY)
    message = str(caught.value)
    assert "pip install 'messages-gateway[otel]'" in message
    assert "tracing" in message
    # and off, the same interpreter without OpenTelemetry builds the app
    create_app(make_settings(upstream.url), env={UPSTREAM_KEY_ENV: UPSTREAM_KEY},
               signing_key=SIGNING_KEY)  # fmt: skip


async def test_otlp_export_in_batches_flushed_when_the_app_stops(
    make_gateway: GatewayFactory, aiohttp_server: Any, upstream: Upstream
) -> None:
    """The real exporter: OTLP/HTTP protobuf to ``tracing.endpoint``; the batch (5 s apart by
    default) goes out when the app's cleanup shuts the provider down."""
    received: list[ExportTraceServiceRequest] = []

    async def collect(request: web.Request) -> web.Response:
        doc = ExportTraceServiceRequest()
        doc.ParseFromString(await request.read())
        received.append(doc)
        return web.Response(body=b"", content_type="application/x-protobuf")

    collector_app = web.Application()
    collector_app.router.add_post("/v1/traces", collect)
    collector = await aiohttp_server(collector_app)
    endpoint = str(collector.make_url("/v1/traces"))
    gw = await make_gateway(
        tracing={"enabled": True, "endpoint": endpoint, "service_name": "gw-test"}
    )
    upstream.mock.enqueue(Script(items=[Text("hi")]))
    async with sdk_for(gw) as client:
        await client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert received == []  # still in the batch
    await gw.close()  # the app's cleanup: provider shutdown, in a thread
    await asyncio.sleep(0)
    spans = [
        (span.name, {a.key for a in span.attributes}, rs.resource)
        for doc in received
        for rs in doc.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    assert sorted(name for name, _, _ in spans)[0] == f"chat {MODEL}"
    assert len(spans) == 2  # the SERVER span and its one attempt
    resource = {a.key: a.value.string_value for a in spans[0][2].attributes}
    assert resource["service.name"] == "gw-test"
    assert resource["service.version"] == __version__


def test_the_environment_turns_tracing_on() -> None:
    assert load_settings(None, {"GATEWAY_TRACING": "1"}).tracing.enabled is True
    assert load_settings(None, {}).tracing.enabled is False


async def test_a_client_leaving_mid_stream_ends_the_span(
    traced: Traced, upstream: Upstream, exporter: InMemorySpanExporter
) -> None:
    gw = await traced()
    upstream.mock.enqueue(Script(items=[Text("word " * 40)], delay_between_events=0.05))
    payload = {"model": MODEL, "max_tokens": 100, "stream": True,
               "messages": [{"role": "user", "content": "talk"}]}  # fmt: skip
    async with aiohttp.ClientSession() as s:
        r = await s.post(gw.make_url("/v1/messages"), json=payload)
        assert r.status == 200
        await r.content.readany()
        r.close()  # the connection goes, mid-stream
    for _ in range(100):
        if of_kind(exporter.get_finished_spans(), SpanKind.SERVER):
            break
        await asyncio.sleep(0.05)
    (server,) = of_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    got = attrs(server)
    assert got["messages_gateway.outcome"] == "client_closed"
    assert got["error.type"] == "client_closed"
    assert got["http.response.status_code"] == 200  # what the client had been sent
    assert server.status.status_code == StatusCode.UNSET  # the client's doing
