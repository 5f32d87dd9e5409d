"""OpenTelemetry traces (issue 18): a SERVER span per request, a CLIENT span per upstream
attempt (its ``traceparent`` sent upstream), a span around the safeguards classifier.

Off by default, and then free: OpenTelemetry is never imported, the middleware holds no Tracing
and the hooks below return at once for a request without a span (``RequestContext.span``). On,
the app's own TracerProvider (never the global one) samples ``ParentBased(TraceIdRatioBased)``
and exports OTLP/HTTP in batches. Attributes follow the GenAI and HTTP semantic conventions and,
like log fields, are ids, models, counts and statuses: never prompt text, keys or headers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from . import __version__
from .startup import StartupError

if TYPE_CHECKING:
    from aiohttp import web
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.util.types import AttributeValue
    from yarl import URL

    from .context import RequestContext
    from .settings import Route, TracingSettings

INSTALL: Final = "pip install 'messages-gateway[otel]'"
MISSING: Final = f"tracing.enabled (GATEWAY_TRACING) needs OpenTelemetry, not installed: {INSTALL}"
PREFIX: Final = "messages_gateway."
#: the gateway's own paths that answer with a chat completion (span name "chat {model}")
CHAT_PATHS: Final = frozenset({"/v1/messages", "/v1/messages/stream"})
#: the upstream paths of a chat completion (the dialects' paths)
UPSTREAM_CHAT: Final = ("/responses", "/chat/completions")
#: load balancer probes: a span each second per balancer says nothing
UNTRACED: Final = frozenset({"/healthz", "/readyz"})
#: a path segment with a digit (a file or batch id): "{id}" in span names (low cardinality)
_ID_SEGMENT: Final = re.compile(r"/(?=[^/]*\d)[^/]{8,}")


class Traced:
    """A span of one request and what its children need: the app's Tracing, the attempt in
    flight (a cancelled request ends it)."""

    __slots__ = ("attempt", "span", "tracing")

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self.tracing = tracing
        self.span = span
        self.attempt: Span | None = None

    def end(self) -> None:
        attempt = self.attempt
        if attempt is not None and attempt.is_recording():
            end_attempt(attempt, None, "cancelled")
        self.span.end()


class Tracing:
    """The app's tracer (None unless enabled, and until the app starts)."""

    def __init__(self, settings: TracingSettings, *, exporter: SpanExporter | None = None) -> None:
        """``exporter`` (tests): spans go there one by one. StartupError: on without OTel."""
        self.settings = settings
        self.enabled = settings.enabled
        self.exporter = exporter
        self.provider: TracerProvider | None = None
        self.tracer: Tracer | None = None
        if self.enabled:
            try:
                import opentelemetry.sdk.trace

                if exporter is None:
                    import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
            except ImportError:
                raise StartupError(MISSING) from None

    def start(self) -> None:
        """Build the provider (its export thread lives as long as the app)."""
        if not self.enabled or self.provider is not None:
            return
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        s = self.settings
        resource = Resource.create({"service.name": s.service_name, "service.version": __version__})
        provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(s.sample_ratio)),
            resource=resource,
            shutdown_on_exit=False,  # the app's cleanup flushes it
        )
        if self.exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        else:  # no endpoint: OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, else localhost:4318
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=s.endpoint or None)
            provider.add_span_processor(BatchSpanProcessor(exporter))
        self.provider = provider
        #: children's tracer (``tracer``, the middleware's, is None again after shutdown)
        self.live = self.tracer = provider.get_tracer("messages-gateway", __version__)
        self.propagator = TraceContextTextMapPropagator()
        self.in_context = trace.set_span_in_context
        self.kind = trace.SpanKind
        self.error = trace.StatusCode.ERROR

    async def shutdown(self) -> None:
        """Export what is left and stop (in a thread: a slow collector must not block)."""
        provider, self.provider, self.tracer = self.provider, None, None
        if provider is not None:
            await asyncio.to_thread(provider.shutdown)

    async def cleanup_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx``: started with the app, flushed when it ends."""
        self.start()
        try:
            yield
        finally:
            await self.shutdown()

    def start_request(self, request: web.Request, ctx: RequestContext) -> None:
        """Open the request's span, continuing the client's ``traceparent`` if it sent one."""
        tracer = self.tracer
        path = request.path
        if tracer is None or path in UNTRACED:
            return
        method = request.method
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        attrs: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.path": path[:200],
            PREFIX + "correlation_id": ctx.cid,
            PREFIX + "request_id": ctx.request_id,
        }
        if route is not None:
            attrs["http.route"] = route
        span = tracer.start_span(
            f"{method} {route}" if route is not None else method,
            context=self.propagator.extract(request.headers),
            kind=self.kind.SERVER,
            attributes=attrs,
        )
        ctx.span = Traced(self, span)

    def end_request(self, request: web.Request, ctx: RequestContext, status: int) -> None:
        """What the request came to (the middleware's summary, as attributes); end its span."""
        traced: Traced | None = ctx.span
        if traced is None:
            return
        span = traced.span
        if span.is_recording():
            outcome = ctx.outcome or ("completed" if status < 400 else "error")
            attrs = _gateway_attributes(ctx, status, outcome)
            if request.path in CHAT_PATHS and ctx.model is not None:
                span.update_name(f"chat {ctx.model[:200]}")
                attrs.update(_chat_attributes(ctx, status))
            error = ctx.error_type or (outcome if outcome not in ("completed", "error") else None)
            if error is not None:
                attrs["error.type"] = error
            span.set_attributes(attrs)
            if status >= 500 or outcome == "upstream_error":
                span.set_status(self.error)
        traced.end()


# --- hooks for the upstream client and the classifier: at once back without a span ----------


def start_attempt(ctx: RequestContext, route: Route, method: str, path: str, url: URL,
                  attempt: int, headers: MutableMapping[str, str]) -> Span | None:  # fmt: skip
    """A CLIENT span for one attempt upstream, ``traceparent`` added to its headers."""
    parent: Traced | None = ctx.span
    if parent is None:
        return None
    tracing = parent.tracing
    attrs: dict[str, AttributeValue] = {
        "server.address": url.host or "",
        "http.request.method": method,
        "url.path": url.path[:200],
        PREFIX + "attempt": attempt,
        PREFIX + "target": route.name,
    }
    if url.port is not None:
        attrs["server.port"] = url.port
    name = f"{method} {_ID_SEGMENT.sub('/{id}', path)[:200]}"
    if path in UPSTREAM_CHAT:
        name = f"chat {route.upstream_model}"
        attrs["gen_ai.operation.name"] = "chat"
        attrs["gen_ai.system"] = attrs["gen_ai.provider.name"] = "openai"
        attrs["gen_ai.request.model"] = route.upstream_model
    span = tracing.live.start_span(
        name, tracing.in_context(parent.span), tracing.kind.CLIENT, attrs
    )
    # W3C traceparent (and tracestate): the upstream continues the trace
    tracing.propagator.inject(headers, context=tracing.in_context(span))
    parent.attempt = span
    return span


def end_attempt(span: Span | None, status: int | None, error: str | None = None) -> None:
    """End an attempt's span once the upstream's headers arrived (``status``), as aiohttp's
    own instrumentation does, or once it failed (``error``: the cause, in words)."""
    if span is None:
        return
    if status is not None:
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            error = str(status)
    if error is not None:
        _fail(span, error)
    span.end()


def start_classifier(ctx: RequestContext, calls: int) -> Traced | None:
    """The safeguards classifier's span, a child of the request's; its attempts are its own."""
    parent: Traced | None = ctx.span
    if parent is None:
        return None
    tracing = parent.tracing
    attrs: dict[str, AttributeValue] = {PREFIX + "safeguards.calls": calls}
    span = tracing.live.start_span(
        "safeguards classifier", tracing.in_context(parent.span), attributes=attrs
    )
    return Traced(tracing, span)


def end_classifier(traced: Traced | None, verdicts: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Verdict counts (``flagged``, ``not_flagged``, ``unavailable`` and why)."""
    if traced is None:
        return
    counts: dict[str, int] = {}
    reasons: set[str] = set() if verdicts is not None else {"cancelled"}
    for v in (verdicts or {}).values():
        if v.get("type") == "evaluated":
            key = str(v.get("outcome"))
        else:
            key = "unavailable"
            reasons.add(str(v.get("reason")))
        counts[key] = counts.get(key, 0) + 1
    span = traced.span
    span.set_attributes({f"{PREFIX}safeguards.{k}": n for k, n in counts.items()})
    if reasons:
        _fail(span, ",".join(sorted(reasons)))
    traced.end()


def _fail(span: Span, error: str) -> None:
    from opentelemetry.trace import StatusCode

    span.set_attribute("error.type", error)
    span.set_status(StatusCode.ERROR)


def _gateway_attributes(
    ctx: RequestContext, status: int, outcome: str
) -> dict[str, AttributeValue]:
    """The summary line's fields (those that are set)."""
    fields: dict[str, AttributeValue | None] = {
        "route": ctx.route, "target": ctx.target, "key_name": ctx.key_name, "stream": ctx.stream,
        "attempts": ctx.attempts or None, "fallbacks": tuple(ctx.fallbacks) or None,
        "outcome": outcome,
    }  # fmt: skip
    attrs: dict[str, AttributeValue] = {"http.response.status_code": status}
    attrs.update((PREFIX + k, v) for k, v in fields.items() if v is not None)
    return attrs


def _chat_attributes(ctx: RequestContext, status: int) -> dict[str, AttributeValue]:
    """GenAI semantic conventions: the client's model, the upstream model that answered, the
    usage (``input_tokens`` counts cached input too, which the conventions break out)."""
    attrs: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": str(ctx.model)[:200],
    }
    answered = ctx.target or (ctx.route if status < 400 else None)
    if answered:
        attrs["gen_ai.response.model"] = answered.partition(":")[2]
    usage = ctx.usage
    if usage is not None:
        attrs["gen_ai.usage.input_tokens"] = usage[0] + usage[2] + usage[3]
        attrs["gen_ai.usage.output_tokens"] = usage[1]
        if usage[2]:
            attrs["gen_ai.usage.cache_read.input_tokens"] = usage[2]
        if usage[3]:
            attrs["gen_ai.usage.cache_creation.input_tokens"] = usage[3]
    if ctx.stop_reason is not None:
        attrs["gen_ai.response.finish_reasons"] = (ctx.stop_reason,)
    return attrs
