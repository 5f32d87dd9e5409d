"""Settings: what can be configured, as msgspec Structs (the schema), and the resolved Route.

Every key is documented in ``config/gateway.toml``; loading them (file, environment, flags) is
:mod:`.config`. Secrets come from the environment only: the file names the *variable* that
holds an upstream key, never the key.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta, Struct

DEFAULT_OPENAI_BASE_URL: Final = "https://api.openai.com/v1"
DEFAULT_BIG_MODEL: Final = "gpt-5"
DEFAULT_SMALL_MODEL: Final = "gpt-5-mini"

Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
Port = Annotated[int, Meta(ge=0, le=65535)]
Seconds = Annotated[float, Meta(gt=0)]


class SettingsError(ValueError):
    """A setting that stops start-up. ``str(err)`` is the one line printed to the user."""


class Secret(str):
    """A string that never shows itself in a repr (settings dumps, tracebacks, logs)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


class ServerSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 8082
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Anthropic's own limit for Messages and count_tokens bodies is 32 MB.
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 32 * 1024 * 1024
    #: seconds of upstream silence after which a `ping` event keeps the client's stream alive
    ping_interval: Seconds = 10.0
    #: largest single SSE event accepted from an upstream
    max_event_bytes: Annotated[int, Meta(ge=1024)] = 16 * 1024 * 1024
    #: /v1/messages* requests handled at once; more get 529 overloaded_error + retry-after.
    #: 0 = no limit
    max_in_flight: Annotated[int, Meta(ge=0)] = 4096
    #: requests whose bodies are still arriving; more get 529 overloaded_error. A request
    #: takes an in-flight slot only once its whole body is in. 0 = no limit
    max_receiving: Annotated[int, Meta(ge=0)] = 1024
    #: on SIGTERM/SIGINT, seconds in-flight requests may take to finish before streams are
    #: ended with an overloaded_error event and waiting requests answered 529
    shutdown_grace: Annotated[float, Meta(ge=0)] = 30.0
    #: on SIGTERM/SIGINT, seconds to keep serving (and accepting) with /readyz answering 503
    #: before the listening socket closes, so a load balancer stops sending first
    drain_delay: Annotated[float, Meta(ge=0)] = 0.0
    #: JSON values (array elements, object members, containers) one request body may hold,
    #: counted before it is decoded: the decoded form costs ~75 bytes and ~0.1 µs per value
    max_json_values: Annotated[int, Meta(ge=1000)] = 1_000_000
    #: largest non-streamed upstream answer, after decompression (bytes); beyond it 502
    max_upstream_body_bytes: Annotated[int, Meta(ge=1024)] = 64 * 1024 * 1024


class TimeoutSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    connect: Seconds = 10.0
    #: upstream response headers; long, because reasoning models think before answering
    headers: Seconds = 600.0
    #: silence between upstream body chunks (a stalled stream)
    idle: Seconds = 300.0
    #: cap on one whole request; 0 = none (long generations must not be cut by a default)
    total: Annotated[float, Meta(ge=0)] = 0.0
    #: receiving a whole request body from the client (408 timeout_error beyond it)
    client_body: Seconds = 60.0
    #: one write to the client making no progress (a client that stopped reading is cut)
    client_send: Seconds = 30.0


class RetrySettings(Struct, kw_only=True, forbid_unknown_fields=True):
    #: attempts per request, the first included; retries happen only before the client has
    #: been sent anything, for connect errors and upstream 429/500/502/503/504
    max_attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    backoff_base: Annotated[float, Meta(ge=0)] = 0.25
    backoff_max: Annotated[float, Meta(ge=0)] = 4.0
    #: a longer upstream retry-after is passed to the client instead of waited out here
    retry_after_cap: Annotated[float, Meta(ge=0)] = 10.0


class UpstreamSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    base_url: str = DEFAULT_OPENAI_BASE_URL
    dialect: Literal["responses", "chat"] = "responses"
    #: name of the environment variable holding the key; "" for servers that need none
    api_key_env: str = "OPENAI_API_KEY"
    #: more keys for a pool (issue 16): variables holding one key each, after api_key_env
    api_key_envs: list[str] = []
    #: a file of keys for the pool, one a line (``#`` comments), after the variables
    api_keys_file: str = ""
    #: how a pool's keys take turns: each in turn, or the one rate-limited longest ago
    key_strategy: Literal["round_robin", "least_limited"] = "round_robin"
    #: requests sent to this upstream at once (0 = no limit); beyond it a request waits
    #: ``queue_timeout``, then goes to the route's next target (529 on the last)
    max_concurrency: Annotated[int, Meta(ge=0)] = 0
    queue_timeout: Annotated[float, Meta(ge=0)] = 1.0
    headers: dict[str, str] = {}
    # Chat Completions server differences (protocol.md §8, §10 items 11-12); ignored by
    # "responses" upstreams.
    #: which field carries the output limit; many compatible servers only honour max_tokens
    max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"
    #: send stream_options.include_usage (servers that reject it: set false)
    stream_usage: bool = True
    #: the server accepts image parts (text-only models: images become a text note)
    images: bool = True
    #: send earlier thinking back on assistant messages under this field (DeepSeek/vLLM
    #: interleaved-thinking models want it); "" = never
    thinking_field: Literal["", "reasoning_content", "reasoning"] = ""
    #: send reasoning_effort (OpenAI reasoning models; most compatible servers reject it)
    reasoning_effort: bool = False
    #: forward top_k (vLLM, llama.cpp and Ollama accept it; OpenAI does not)
    top_k: bool = False
    #: where mid-conversation system messages go: "inline" (in place, as sent) or "merge"
    #: (appended to the leading system message: many local chat templates reject a system
    #: message anywhere but first, and Claude Code ends its first turn with one)
    mid_system: Literal["inline", "merge"] = "inline"


class TargetSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    """An upstream model and its capabilities: a route's first target, or one of its
    ``fallbacks`` (issue 16)."""

    #: the upstream model; the literals "big" / "small" mean ``[models].big`` / ``.small``
    model: str
    upstream: str = "default"
    #: the model's largest output; a client's larger max_tokens is clamped, never a 400
    max_output_tokens: Annotated[int, Meta(ge=16)] | None = None
    #: the model takes ``reasoning`` parameters
    reasoning: bool = True
    #: the model takes temperature / top_p (OpenAI reasoning models reject them)
    sampling: bool = False
    #: effort for ``thinking: adaptive`` without an explicit effort
    default_effort: Effort | None = None
    #: offer the client's server tools (web search, code execution, MCP) as the upstream's
    #: hosted tools (Responses upstreams only); off: such a request gets "unavailable"
    hosted_tools: bool = True
    #: ``compact_20260112`` as the upstream's own compaction (Responses upstreams only);
    #: off: that edit is a 400
    compaction: bool = True


class RouteSettings(TargetSettings, kw_only=True, forbid_unknown_fields=True):
    """Client model names → their first target, then its fallbacks."""

    #: exact model names or glob patterns (``*haiku*``), matched case-insensitively
    match: Annotated[list[str], Meta(min_length=1)]
    #: answer Claude Code's auto-mode safety check on this route (``[safeguards]``)
    safeguards: bool = True
    #: targets tried in order when this one fails before the answer starts (issue 16)
    fallbacks: list[TargetSettings] = []
    #: also move to the next target when the prompt is too long for this one's model
    fallback_on_overflow: bool = False


class FallbackSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    """The budget of a route with fallbacks, and the circuit breakers (issue 16)."""

    #: attempts on each target but the last (which gets ``retries.max_attempts``)
    attempts_per_target: Annotated[int, Meta(ge=1, le=10)] = 1
    #: targets tried at most per request, the first included
    max_targets: Annotated[int, Meta(ge=1, le=10)] = 3
    #: seconds after the first attempt past which no further target is started
    budget: Seconds = 60.0
    #: a streamed request's wait for response headers from a target that is not the last
    #: (streams start at once; a silent upstream is stuck); the last waits timeouts.headers
    stream_headers_timeout: Seconds = 30.0
    #: consecutive failures (connect, 5xx, timeouts) that open a target's circuit
    breaker_failures: Annotated[int, Meta(ge=1)] = 5
    #: seconds an open circuit is skipped before one request probes it again
    breaker_cooldown: Seconds = 30.0


class SafeguardSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    """Claude Code's auto-mode safety check (issue 13): a classifier judges the answer's tool
    calls when a request carries ``safeguards``."""

    #: off: such requests are answered "unavailable: disabled" (Claude Code then asks the user)
    enabled: bool = True
    #: the classifier, as a client model name routed like any request (``claude-haiku-5-5``);
    #: "" = the request's own upstream with ``models.small``
    model: str = ""
    #: seconds the classifier may take; past it each call's verdict is "unavailable"
    timeout: Seconds = 20.0
    #: a file whose text replaces the built-in classifier instructions ("" = built in)
    prompt_file: str = ""
    #: characters of conversation the classifier is shown at most (oldest turns go first)
    max_context_chars: Annotated[int, Meta(ge=1000)] = 24_000


class FilesSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    """The Files and Message Batches APIs (issue 15 item 8), kept on an OpenAI upstream."""

    #: the ``[upstreams]`` key whose Files and Batch APIs hold them
    upstream: str = "default"
    #: the largest upload (Anthropic's limit: 500 MB)
    max_file_bytes: Annotated[int, Meta(ge=1024)] = 500 * 1024 * 1024
    #: the largest batch body (Anthropic's limit: 256 MB)
    max_batch_bytes: Annotated[int, Meta(ge=1024)] = 256 * 1024 * 1024
    #: the gateway's URL as clients reach it, for a batch's ``results_url``; "" = the
    #: scheme and host the request came to
    public_url: str = ""


class AccountSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    """Named client keys with limits (issue 17)."""

    #: the named keys file (JSON; ``python -m gateway keys add NAME``); "" = none
    keys_file: str = ""
    #: seconds between looks at the keys file for changes (SIGHUP reloads it at once)
    reload_interval: Seconds = 1.0


class LedgerSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    """The usage ledger (issue 17): one row per /v1/messages* request."""

    enabled: bool = True
    #: the SQLite file; "" = ``usage.db`` in the state directory (beside the signing key)
    path: str = ""
    #: a variable holding a PostgreSQL DSN (``postgresql://user:pw@host/db``); "" = SQLite
    dsn_env: str = ""
    batch_size: Annotated[int, Meta(ge=1)] = 500
    flush_interval: Seconds = 1.0
    #: rows waiting for a database that does not keep up; beyond it they are counted, logged
    #: and dropped (gateway_ledger_dropped_total)
    max_pending: Annotated[int, Meta(ge=1000)] = 100_000
    #: seconds between re-reads of each key's budget spend from the ledger (--workers)
    refresh_interval: Seconds = 10.0


class Price(Struct, kw_only=True, forbid_unknown_fields=True):
    """Prices per million tokens (any currency, used alike everywhere)."""

    input: Annotated[float, Meta(ge=0)]
    output: Annotated[float, Meta(ge=0)]
    #: cached input read; absent = ``input``
    cache_read: Annotated[float, Meta(ge=0)] | None = None
    #: cache writes; absent = ``input``
    cache_write: Annotated[float, Meta(ge=0)] | None = None


class RedisSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    """State shared by a fleet of gateways (issue 18): per-key limits and concurrency, the
    count_tokens cache, circuit breakers, key revocations. "" = everything in process."""

    #: ``redis://[:password@]host:6379/0`` (Valkey too); env GATEWAY_REDIS_URL
    url: str = ""
    #: prefix of every key the gateway writes (several fleets can share one Redis)
    prefix: str = "mgw:"
    #: the longest one Redis call may take; beyond it the gateway uses its local state
    timeout: Seconds = 0.25
    #: seconds between attempts to reach Redis again while it is down
    retry_interval: Seconds = 2.0


class TracingSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    """OpenTelemetry traces (issue 18; ``pip install 'messages-gateway[otel]'``)."""

    enabled: bool = False
    #: OTLP/HTTP traces endpoint; "" = OTEL_EXPORTER_OTLP_TRACES_ENDPOINT /
    #: OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318/v1/traces
    endpoint: str = ""
    service_name: str = "messages-gateway"
    #: the share of requests traced (a client's sampled ``traceparent`` is always followed)
    sample_ratio: Annotated[float, Meta(ge=0, le=1)] = 1.0


class ModelSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    big: Annotated[str, Meta(min_length=1)] = DEFAULT_BIG_MODEL
    small: Annotated[str, Meta(min_length=1)] = DEFAULT_SMALL_MODEL
    #: model ids listed by GET /v1/models (Claude Code's picker); any claude-* name still routes
    aliases: list[str] = msgspec.field(
        default_factory=lambda: ["claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"]
    )


class Settings(Struct, kw_only=True, forbid_unknown_fields=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    timeouts: TimeoutSettings = msgspec.field(default_factory=TimeoutSettings)
    retries: RetrySettings = msgspec.field(default_factory=RetrySettings)
    models: ModelSettings = msgspec.field(default_factory=ModelSettings)
    safeguards: SafeguardSettings = msgspec.field(default_factory=SafeguardSettings)
    files: FilesSettings = msgspec.field(default_factory=FilesSettings)
    fallback: FallbackSettings = msgspec.field(default_factory=FallbackSettings)
    accounts: AccountSettings = msgspec.field(default_factory=AccountSettings)
    ledger: LedgerSettings = msgspec.field(default_factory=LedgerSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    tracing: TracingSettings = msgspec.field(default_factory=TracingSettings)
    #: prices per upstream model (``gpt-5``) or target (``local:Qwen/Qwen3-8B``), for cost
    prices: dict[str, Price] = {}
    upstreams: dict[str, UpstreamSettings] = msgspec.field(
        default_factory=lambda: {"default": UpstreamSettings()}
    )
    #: first match wins; when empty, ``*haiku*`` → small and everything else → big
    routes: list[RouteSettings] = []
    #: serve from the built-in mock upstream (set by __main__ when no key is configured)
    mock: bool = False


class Route(Struct, kw_only=True, frozen=True):
    """A resolved route: everything a request needs to reach its upstream."""

    name: str
    dialect: Literal["responses", "chat"]
    base_url: str
    #: the ``[upstreams]`` key it reaches
    upstream: str = ""
    api_key: Secret | None
    #: the variable the key came from ("" when the upstream needs none), for error messages
    key_env: str = ""
    headers: Mapping[str, str]
    upstream_model: str
    #: lower-cased exact names / globs of the client model names this route serves
    patterns: tuple[str, ...] = ()
    max_output_tokens: int | None = None
    reasoning: bool = True
    sampling: bool = False
    default_effort: str | None = None
    max_tokens_field: str = "max_completion_tokens"
    stream_usage: bool = True
    images: bool = True
    thinking_field: str = ""
    reasoning_effort: bool = False
    top_k: bool = False
    mid_system: str = "inline"
    safeguards: bool = True
    #: server tools become the upstream's hosted tools (a Responses route that allows it)
    hosted_tools: bool = True
    #: compact_20260112 becomes the upstream's compaction (a Responses route that allows it)
    compaction: bool = True
    #: the targets after this one, in order (issue 16)
    fallbacks: tuple[Route, ...] = ()
    fallback_on_overflow: bool = False

    @property
    def chain(self) -> tuple[Route, ...]:
        return (self, *self.fallbacks)

    def __repr__(self) -> str:  # never show the key, even masked
        return f"Route({self.name!r}, {self.dialect}, {self.base_url!r}, {self.upstream_model!r})"


def default_routes() -> list[RouteSettings]:
    return [
        RouteSettings(match=["*haiku*"], model="small"),
        RouteSettings(match=["*"], model="big"),
    ]


def glob_match(name: str, pattern: str) -> bool:
    """Case-insensitive glob (``*``, ``?``, ``[…]``); a pattern without wildcards is exact."""
    return fnmatch.fnmatchcase(name, pattern)
