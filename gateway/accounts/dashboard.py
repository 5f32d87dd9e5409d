"""The status page and the admin endpoints (issue 17 items 3-4). An admin key is required
(``"admin": true`` in the keys file; a browser sends it as the Basic-auth password), except
on a gateway with no inbound keys at all.

``GET /dashboard`` is one server-rendered HTML file with an inline script and inline SVG
charts (no build step, no CDN: it works offline); it polls ``GET /dashboard/data``.
``GET /v1/admin/usage?by=key&since=7d`` is the ledger's totals as JSON.
"""

from __future__ import annotations

import re
import time
from importlib import resources
from typing import Any, Final

import orjson
from aiohttp import web

from ..context import CTX_KEY, RequestContext
from ..errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from .ledger import GROUPS

_SINCE_RE: Final = re.compile(r"^(\d{1,6})([mhd])$")
_UNIT: Final = {"m": 60, "h": 3600, "d": 86400}
#: how far back the charts go, and their bucket
CHART_SPAN: Final = 24 * 3600
CHART_BUCKET: Final = 3600


def parse_since(text: str, now: float) -> float:
    """``7d``, ``24h``, ``30m`` (ago), or a UTC date ``2026-11-01`` → epoch seconds."""
    m = _SINCE_RE.match(text.strip())
    if m:
        return now - int(m.group(1)) * _UNIT[m.group(2)]
    try:
        import datetime as dt

        day = dt.datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        raise InvalidRequestError(
            f"since: {text[:40]!r} is not a duration (7d, 24h, 30m) or a date (2026-11-01)"
        ) from None
    return day.timestamp()


def require_admin(request: web.Request) -> None:
    from ..keys import ACCOUNTS

    accounts = request.app[ACCOUNTS]
    if accounts.open_admin:
        return
    ctx: RequestContext = request[CTX_KEY]
    if ctx.account is None or not ctx.account.entry.admin:
        raise PermissionDeniedError(
            'the status page and admin endpoints need an admin key ("admin": true in the keys file)'
        )


def _json(doc: Any) -> web.Response:
    return web.Response(
        body=orjson.dumps(doc),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def page(request: web.Request) -> web.Response:
    require_admin(request)
    html = resources.files(__package__).joinpath("dashboard.html").read_bytes()
    return web.Response(
        body=html,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-store",
            # nothing from elsewhere, ever: the page is one file with its script inline
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; img-src data:; connect-src 'self'",
        },
    )


async def data(request: web.Request) -> web.Response:
    """Everything the page shows, in one JSON document."""
    from ..keys import ACCOUNTS, IN_FLIGHT, LIFECYCLE, RESILIENCE, ROUTER

    require_admin(request)
    app = request.app
    accounts = app[ACCOUNTS]
    now = time.time()
    doc: dict[str, Any] = {
        "now": round(now, 3),
        "in_flight": app[IN_FLIGHT].value,
        "open_streams": len(app[LIFECYCLE].streams),
        "live": accounts.stats.snapshot(),
        "keys": accounts.status(),
        "upstreams": app[RESILIENCE].status(app[ROUTER].targets()) if RESILIENCE in app else {},
        "ledger": None,
    }
    ledger = accounts.ledger
    if ledger is not None:
        since = now - CHART_SPAN
        doc["ledger"] = {
            "since": since,
            "bucket": CHART_BUCKET,
            "by_key": await ledger.usage("key", since),
            "by_model": await ledger.usage("model", since),
            "series_key": [list(r) for r in await ledger.series("key", since, CHART_BUCKET)],
            "series_model": [list(r) for r in await ledger.series("model", since, CHART_BUCKET)],
            "written": ledger.written,
            "pending": len(ledger.pending),
            "dropped": ledger.dropped,
        }
    return _json(doc)


async def usage(request: web.Request) -> web.Response:
    """``GET /v1/admin/usage?by=key&since=7d``: requests, errors, tokens, cost per group."""
    from ..keys import ACCOUNTS

    require_admin(request)
    ledger = request.app[ACCOUNTS].ledger
    if ledger is None:
        raise NotFoundError("the usage ledger is off (ledger.enabled = false)")
    by = request.query.get("by", "key")
    if by not in GROUPS:
        raise InvalidRequestError(f"by: one of {', '.join(GROUPS)}")
    now = time.time()
    since = parse_since(request.query.get("since", "7d"), now)
    return _json({"by": by, "since": since, "data": await ledger.usage(by, since)})


def add_account_routes(app: web.Application) -> None:
    app.router.add_get("/dashboard", page)
    app.router.add_get("/dashboard/data", data)
    app.router.add_get("/v1/admin/usage", usage)
