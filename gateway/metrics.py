"""Prometheus metrics (``GET /metrics``, text format via prometheus-client).

One registry per app (no global state, so tests and workers stay independent). Label values are
bounded and never hold client text: routes come from configuration, status and error types from
our own tables, and the client's model name only when it is a plain identifier, with at most
``MAX_MODELS`` distinct values (then ``other``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from .context import RequestContext
from .failover.breaker import STATE_VALUE

MAX_MODELS: Final = 100
MAX_KEYS: Final = 1000
_MODEL_RE: Final = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
_TOKEN_KINDS: Final = ("input", "output", "cache_read", "cache_write")


class Metrics:
    """The gateway's counters, histograms and gauges.

    With ``--workers N`` the master sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker imports
    prometheus-client, so every worker writes its values to files there and ``/metrics``, served
    by whichever worker, sums them all (issue 11 item 8): counters stay monotonic and complete.
    The two gauges then cannot be read from callbacks (another worker's callback is out of
    reach); ``in_flight_gauge`` / ``streams_gauge`` are moved by the code that changes them.
    """

    def __init__(self, in_flight: Callable[[], float], open_streams: Callable[[], float]) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        # In multiprocess mode the values live in files; the exposition registry collects
        # them and the metric objects register nowhere.
        r = None if self.multiprocess else self.registry
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by route, client model, HTTP status and Anthropic error type.",
            ["route", "model", "status", "error_type"],
            registry=r,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Whole request time (for streams: until the last event).",
            ["route", "stream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfb = Histogram(
            "gateway_time_to_first_byte_seconds",
            "Streams: time until the first event reached the client.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Time spent in the gateway itself (total minus waiting on the upstream), up to the "
            "response headers.",
            ["route"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.attempts = Counter(
            "gateway_upstream_attempts", "Upstream requests made (retries included).", ["route"],
            registry=r,
        )  # fmt: skip
        self.failures = Counter(
            "gateway_upstream_failures",
            "Requests that failed because of the upstream, by mapped error type.",
            ["route", "error_type"],
            registry=r,
        )
        self.tokens = Counter(
            "gateway_tokens",
            "Tokens reported by the upstream (input excludes cache reads and writes).",
            ["route", "kind"],
            registry=r,
        )
        self.safeguard_verdicts = Counter(
            "gateway_safeguard_verdicts",
            "Auto-mode safety verdicts given, by outcome (flagged, not_flagged, "
            "unavailable_<reason>, disabled).",
            ["outcome"],
            registry=r,
        )
        self.safeguard_seconds = Histogram(
            "gateway_safeguard_classifier_seconds",
            "Time the safety classifier took per answer with tool calls.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.circuit = Gauge(
            "gateway_upstream_circuit_state",
            "Circuit breaker of each upstream target (upstream:model): 0 closed, 1 half-open, "
            "2 open.",
            ["target"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.fallbacks = Counter(
            "gateway_fallbacks",
            "Targets a route's chain passed over, by target and reason (connect, 5xx, "
            "overloaded, timeout, bad_response, rate_limit, quota, auth, overflow, "
            "circuit_open, busy, unsupported).",
            ["target", "reason"],
            registry=r,
        )
        self.key_events = Counter(
            "gateway_upstream_key_events",
            "Key pool events by upstream: rate_limited and quota (a key cools down), disabled "
            "(a key refused with 401/403 leaves the pool).",
            ["upstream", "event"],
            registry=r,
        )
        self.key_requests = Counter(
            "gateway_key_requests",
            "Requests by named client key (keys file names, never keys) and HTTP status.",
            ["key", "status"],
            registry=r,
        )
        self.key_tokens = Counter(
            "gateway_key_tokens",
            "Tokens by named client key (input excludes cache reads and writes).",
            ["key", "kind"],
            registry=r,
        )
        self.key_cost = Counter(
            "gateway_key_cost", "Cost by named client key ([prices]).", ["key"], registry=r
        )
        self.key_limited = Counter(
            "gateway_key_limited",
            "Requests refused by a key's limit (rpm, tpm, concurrent, daily_tokens, …).",
            ["key", "limit"],
            registry=r,
        )
        self.ledger_dropped = Counter(
            "gateway_ledger_dropped",
            "Usage rows dropped because the ledger's database did not keep up.",
            registry=r,
        )
        self.redis_up = Gauge(
            "gateway_redis_up",
            "1 while the fleet's Redis (host:port) answers, 0 while this gateway runs on local "
            "state (absent without redis.url).",
            ["redis"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self._keys: set[str] = set()
        in_flight_help = "/v1/messages* requests being handled."
        streams_help = "SSE streams open to clients."
        self.in_flight_gauge: Gauge | None = None
        self.streams_gauge: Gauge | None = None
        if self.multiprocess:
            self.in_flight_gauge = Gauge(
                "gateway_in_flight_requests",
                in_flight_help,
                multiprocess_mode="livesum",
                registry=None,
            )
            self.streams_gauge = Gauge(
                "gateway_open_streams", streams_help, multiprocess_mode="livesum", registry=None
            )
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        else:
            Gauge("gateway_in_flight_requests", in_flight_help, registry=r).set_function(in_flight)
            Gauge("gateway_open_streams", streams_help, registry=r).set_function(open_streams)
        self._models: set[str] = set()
        # prometheus-client's labels() validates and locks on every call; children are
        # cached per label tuple since the label space is small and bounded.
        self._children: dict[tuple[object, ...], Any] = {}
        # The children one finished request touches, found with one lookup each (issue 19).
        self._requests: dict[tuple[str, str | None, int, str], Any] = {}
        self._routes: dict[tuple[str, bool | None], _RouteChildren] = {}
        self._key_children: dict[str, _KeyChildren] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _model(self, model: str | None) -> str:
        if model is None:
            return ""
        if model in self._models:
            return model
        if len(self._models) < MAX_MODELS and _MODEL_RE.match(model):
            self._models.add(model)
            return model
        return "other"

    def observe(self, ctx: RequestContext, status: int, path: str) -> None:
        """Record one finished request (called by the middleware, once per request)."""
        if not path.startswith("/v1/messages"):
            return
        route = ctx.route or ""
        etype = ctx.error_type or ""
        key = (route, ctx.model, status, etype)
        counter = self._requests.get(key)
        if counter is None:  # bounded: routes, MAX_MODELS models, statuses, error types
            counter = self._child(self.requests, route, self._model(ctx.model), str(status), etype)
            if ctx.model is None or ctx.model in self._models:
                self._requests[key] = counter
        counter.inc()
        kids = self._routes.get((route, ctx.stream))
        if kids is None:
            kids = self._routes[(route, ctx.stream)] = _RouteChildren(self, route, ctx.stream)
        kids.duration.observe(ctx.elapsed_ms() / 1000.0)
        if ctx.ttfb_ms is not None:
            kids.ttfb.observe(ctx.ttfb_ms / 1000.0)
        if ctx.overhead_ms is not None:
            kids.overhead.observe(ctx.overhead_ms / 1000.0)
        if ctx.attempts:
            kids.attempts.inc(ctx.attempts)
            if etype and (ctx.upstream_status is None or ctx.upstream_status >= 400):
                self._child(self.failures, route, etype).inc()
            elif ctx.outcome in ("upstream_error", "upstream_timeout"):
                self._child(self.failures, route, etype or "api_error").inc()
        u = ctx.usage
        if u:
            for child, n in zip(kids.tokens, u, strict=True):
                if n:
                    child.inc(n)

    def observe_safeguards(self, counts: dict[str, int], seconds: float | None) -> None:
        """Record one answer's verdicts (outcomes are our own words: bounded labels)."""
        for outcome, n in counts.items():
            self._child(self.safeguard_verdicts, outcome).inc(n)
        if seconds is not None:
            self.safeguard_seconds.observe(seconds)

    def fallback(self, target: str, reason: str) -> None:
        self._child(self.fallbacks, target, reason).inc()

    def circuit_state(self, target: str, state: str) -> None:
        self._child(self.circuit, target).set(STATE_VALUE[state])

    def key_event(self, upstream: str, event: str) -> None:
        self._child(self.key_events, upstream, event).inc()

    def _key(self, name: str) -> str:
        """A bounded label: the first MAX_KEYS key names, then ``other``."""
        if name in self._keys:
            return name
        if len(self._keys) < MAX_KEYS:
            self._keys.add(name)
            return name
        return "other"

    def key_request(
        self, name: str, status: int, usage: tuple[int, int, int, int] | None, cost: float
    ) -> None:
        kids = self._key_children.get(name)
        if kids is None:
            key = self._key(name)
            kids = _KeyChildren(self, key)
            if key == name:  # "other" is looked up each time: the cache stays bounded
                self._key_children[name] = kids
        counter = kids.requests.get(status)
        if counter is None:
            counter = kids.requests[status] = self._child(self.key_requests, kids.key, str(status))
        counter.inc()
        if usage:
            for child, n in zip(kids.tokens, usage, strict=True):
                if n:
                    child.inc(n)
        if cost:
            kids.cost.inc(cost)

    def key_limited_by(self, name: str, limit: str) -> None:
        self._child(self.key_limited, self._key(name), limit).inc()

    def redis_state(self, where: str, up: bool) -> None:
        self._child(self.redis_up, where).set(1 if up else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RouteChildren:
    """A route's children that every request of it updates (per streaming or not)."""

    __slots__ = ("attempts", "duration", "overhead", "tokens", "ttfb")

    def __init__(self, m: Metrics, route: str, stream: bool | None) -> None:
        self.duration = m._child(m.duration, route, "true" if stream else "false")
        self.ttfb = m._child(m.ttfb, route)
        self.overhead = m._child(m.overhead, route)
        self.attempts = m._child(m.attempts, route)
        self.tokens = tuple(m._child(m.tokens, route, kind) for kind in _TOKEN_KINDS)


class _KeyChildren:
    """A named key's children (``key`` is its bounded label)."""

    __slots__ = ("cost", "key", "requests", "tokens")

    def __init__(self, m: Metrics, key: str) -> None:
        self.key = key
        self.requests: dict[int, Any] = {}
        self.tokens = tuple(m._child(m.key_tokens, key, kind) for kind in _TOKEN_KINDS)
        self.cost = m._child(m.key_cost, key)
