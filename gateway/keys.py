"""Typed application keys (``web.AppKey``), in their own module so handlers and app share them
without an import cycle."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from .accounts.service import Accounts
from .admission import InFlight
from .anthropic.signatures import Signer
from .count_tokens import TokenCounter
from .failover.chain import Resilience
from .lifecycle import Lifecycle
from .metrics import Metrics
from .routing import Router
from .safeguards.classifier import Safeguards
from .settings import Settings
from .shared import Shared
from .tracing import Tracing
from .upstream import UpstreamClient

SETTINGS: Final = web.AppKey("settings", Settings)
ROUTER: Final = web.AppKey("router", Router)
SIGNER: Final = web.AppKey("signer", Signer)
UPSTREAM: Final = web.AppKey("upstream", UpstreamClient)
COUNTER: Final = web.AppKey("token_counter", TokenCounter)
METRICS: Final = web.AppKey("metrics", Metrics)
IN_FLIGHT: Final = web.AppKey("in_flight", InFlight)
#: open streams and waiting requests (graceful shutdown ends them)
LIFECYCLE: Final = web.AppKey("lifecycle", Lifecycle)
#: Claude Code's auto-mode safety check (issue 13)
SAFEGUARDS: Final = web.AppKey("safeguards", Safeguards)
#: base URL of the in-process mock upstream, when the gateway serves from it
MOCK_URL: Final = web.AppKey("mock_url", str)
#: fallback chains, circuit breakers, per-upstream limits (issue 16)
RESILIENCE: Final = web.AppKey("resilience", Resilience)
#: named client keys, limits, the usage ledger, the status page (issue 17)
ACCOUNTS: Final = web.AppKey("accounts", Accounts)
#: a fleet's Redis (issue 18)
SHARED: Final = web.AppKey("shared", Shared)
#: OpenTelemetry traces (issue 18; a tracer only when enabled)
TRACING: Final = web.AppKey("tracing", Tracing)
