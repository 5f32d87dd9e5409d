"""What one request carries through the gateway: its ids and what its summary line reports."""

from __future__ import annotations

import time
from typing import Any, Final

from aiohttp import web

from .schemas.anthropic_out import Usage

CORRELATION_HEADER: Final = "X-Correlation-ID"


#: RequestContext.stage: where a /v1/messages* request stands in admission
NOT_COUNTED: Final = 0
RECEIVING: Final = 1
ADMITTED: Final = 2


class RequestContext:
    """What one request's summary log line reports (allow-listed fields only)."""

    __slots__ = (
        "account",
        "attempts",
        "cid",
        "error_type",
        "events",
        "fallbacks",
        "key_name",
        "model",
        "outcome",
        "overhead_ms",
        "reasoning",
        "request_id",
        "reservation",
        "route",
        "sent_status",
        "skipped",
        "span",
        "stage",
        "start",
        "stop_reason",
        "stream",
        "target",
        "ttfb_ms",
        "upstream_ms",
        "upstream_status",
        "usage",
    )

    def __init__(self, cid: str, request_id: str) -> None:
        self.cid = cid
        self.request_id = request_id
        self.start = time.perf_counter()
        self.model: str | None = None
        self.route: str | None = None
        #: the chain's target that answered (issue 16), how many were skipped, and
        #: "target:reason" for each one passed over
        self.target: str | None = None
        self.skipped = 0
        self.fallbacks: list[str] = []
        #: the client key's name (issue 17): a named key's, "anonymous", or None (no auth)
        self.key_name: str | None = None
        #: the named key's live state (limits, budgets) and this request's token reservation
        self.account: Any = None
        self.reservation: Any = None
        #: reasoning tokens the upstream counted (part of output_tokens)
        self.reasoning = 0
        self.stream: bool | None = None
        self.upstream_status: int | None = None
        self.upstream_ms: float | None = None
        self.attempts = 0
        self.ttfb_ms: float | None = None
        self.events: int | None = None
        self.usage: tuple[int, int, int, int] | None = None
        self.stop_reason: str | None = None
        self.error_type: str | None = None
        self.outcome: str | None = None
        self.overhead_ms: float | None = None
        self.stage = NOT_COUNTED
        #: the status a streamed answer already sent (its handler may end without a response)
        self.sent_status: int | None = None
        #: the request's trace span (a ``tracing.Traced``); None when tracing is off
        self.span: Any = None

    def finish(self, usage: Usage, stop_reason: str | None) -> None:
        """Record the answer's usage and stop reason for the summary line and metrics."""
        self.usage = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens,
        )
        self.stop_reason = stop_reason
        details = usage.output_tokens_details
        if isinstance(details, dict):
            self.reasoning = details.get("thinking_tokens", 0)

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.start) * 1000.0, 3)


CTX_KEY: Final = web.RequestKey("gateway_ctx", RequestContext)
