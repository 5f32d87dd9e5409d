"""The fallback chain (issue 16): a route's targets tried in order before the first byte
reaches the client, with circuit breakers per target, concurrency limits per upstream and
one budget.

Budget: each target but the last gets ``fallback.attempts_per_target`` attempts (default 1:
move on at once) and, streamed, ``fallback.stream_headers_timeout`` for its headers; the
last gets ``retries.max_attempts`` and ``timeouts.headers``, as a route without fallbacks.
At most ``fallback.max_targets`` targets are tried, and none is started once
``fallback.budget`` seconds have gone. A target is skipped at no cost while its circuit is
open, while every key of its upstream is cooling down (unless it is the last), while its
upstream is at ``max_concurrency`` past ``queue_timeout``, or when it cannot serve the
request (a fallback without the server tools it asks for, say). The error after the chain is
spent is the last target's, saying which targets were tried and why each failed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from ..context import RequestContext
from ..errors import (
    APIError,
    AuthenticationError,
    BadGatewayError,
    BillingError,
    GatewayError,
    GatewayTimeoutError,
    InvalidRequestError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitError,
    clip,
)
from ..logs import log_event
from ..settings import FallbackSettings, Route, Settings
from ..upstream import UpstreamClient
from .breaker import Breaker, Limiter

if TYPE_CHECKING:
    from ..shared import Shared

#: failures that count against a target's circuit (the upstream itself is unwell)
BREAKER_REASONS: Final = frozenset({"connect", "5xx", "overloaded", "timeout", "bad_response"})


@dataclass(slots=True)
class Prepared:
    """One target's request: where it goes, its body, and what the answer's translation
    needs (the handler's business)."""

    path: str
    body: bytes
    extra: Any = None


@dataclass(slots=True)
class Opened:
    """The target that answered, its response (a non-streamed body already read) and the
    upstream slot it holds until :meth:`release`."""

    target: Route
    resp: aiohttp.ClientResponse
    data: bytes | None
    extra: Any
    limiter: Limiter | None

    def release(self) -> None:
        if self.limiter is not None:
            self.limiter.release()
            self.limiter = None


def fallback_reason(err: GatewayError, overflow: bool) -> str | None:
    """Why ``err`` sends the request on to the next target, or None when it is the answer."""
    if isinstance(err, RateLimitError):
        return "rate_limit"
    if isinstance(err, BillingError):
        return "quota"
    if isinstance(err, GatewayTimeoutError):
        return "timeout"
    if isinstance(err, OverloadedError):
        return "overloaded"
    if isinstance(err, BadGatewayError):
        return "bad_response"
    if isinstance(err, APIError):
        return "connect" if err.upstream_status is None else "5xx"
    if isinstance(err, AuthenticationError | PermissionDeniedError):
        return "auth"
    if (
        overflow
        and isinstance(err, InvalidRequestError)
        and err.message.startswith("prompt is too long")
    ):
        return "overflow"
    return None


class Resilience:
    """Breakers and limiters for one app, and the chain that uses them."""

    def __init__(
        self,
        settings: Settings,
        upstream: UpstreamClient,
        on_fallback: Callable[[str, str], None] | None = None,
        on_circuit: Callable[[str, str], None] | None = None,
        shared: Shared | None = None,
    ) -> None:
        self.settings: FallbackSettings = settings.fallback
        self.upstream = upstream
        self.breakers: dict[str, Breaker] = {}
        self.limiters = {
            name: Limiter(up.max_concurrency) for name, up in settings.upstreams.items()
        }
        self.queue_timeouts = {name: up.queue_timeout for name, up in settings.upstreams.items()}
        self.on_fallback = on_fallback
        self.on_circuit = on_circuit
        #: a fleet's Redis: circuits opened or closed here are announced to the others
        self.shared = shared
        self.instance = os.urandom(8).hex()
        self._applying = False
        if shared is not None and shared.configured:
            shared.handlers.append(self._on_event)

    def breaker(self, target: Route) -> Breaker:
        return self.breakers.get(target.name) or self._breaker(target.name)

    def _breaker(self, name: str) -> Breaker:
        fb = self.settings
        found = self.breakers[name] = Breaker(name, fb.breaker_failures, fb.breaker_cooldown)
        found.on_change = self._changed
        return found

    def _changed(self, name: str, state: str) -> None:
        if self.on_circuit is not None:
            self.on_circuit(name, state)
        shared = self.shared
        if shared is not None and not self._applying and state != "half_open":
            seconds = self.breakers[name].retry_in() if name in self.breakers else 0.0
            shared.publish({"type": "circuit", "target": name, "state": state,
                            "for": round(seconds, 3), "from": self.instance})  # fmt: skip

    def _on_event(self, event: dict[str, Any]) -> None:
        """A circuit another gateway opened or closed: one gateway's discovery of a dead
        upstream spares the others their own failed attempts."""
        if event.get("type") != "circuit" or event.get("from") == self.instance:
            return
        name, seconds = event.get("target"), event.get("for")
        if not isinstance(name, str) or not isinstance(seconds, int | float):
            return
        if name not in self.breakers and len(self.breakers) >= 4096:
            return  # names come from the fleet's own configuration; never grow without end
        breaker = self.breakers.get(name) or self._breaker(name)
        self._applying = True
        try:
            breaker.apply(str(event.get("state")), float(seconds))
        finally:
            self._applying = False

    async def open(
        self,
        route: Route,
        build: Callable[[Route], Prepared],
        ctx: RequestContext,
        *,
        stream: bool,
    ) -> Opened:
        """Send the request to the first target of ``route``'s chain that answers."""
        fb = self.settings
        chain = route.chain
        loop = asyncio.get_running_loop()
        started = loop.time()
        notes: list[str] = []  # "target: why", for the error once the chain is spent
        last_err: GatewayError | None = None
        tried = 0
        for pos, target in enumerate(chain):
            final = pos == len(chain) - 1 or tried + 1 >= fb.max_targets
            if tried and loop.time() - started > fb.budget:
                notes.append(f"{target.name}: not tried (fallback.budget of {fb.budget:g}s spent)")
                break
            breaker = self.breaker(target)
            if not breaker.allow():
                self._skip(ctx, target, notes, "circuit_open",
                           f"circuit open for {breaker.retry_in():.1f}s more")  # fmt: skip
                continue
            pool = self.upstream.pool(target)
            if pool is not None and not final and not pool.usable():
                breaker.release()
                self._skip(ctx, target, notes, "rate_limit", "every key is cooling down")
                continue
            limiter = self.limiters.get(target.upstream)
            if limiter is not None and not await limiter.acquire(
                self.queue_timeouts.get(target.upstream, 0.0)
            ):
                breaker.release()
                self._skip(ctx, target, notes, "busy",
                           f"{limiter.limit} requests in flight (max_concurrency)")  # fmt: skip
                continue
            try:
                prepared = build(target)
            except InvalidRequestError as err:
                if limiter is not None:
                    limiter.release()
                breaker.release()
                if pos == 0:
                    raise  # the client's request is at fault, not the chain
                self._skip(ctx, target, notes, "unsupported", f"cannot serve it ({err.message})")
                continue
            tried += 1
            try:
                resp = await self.upstream.send(
                    target, prepared.path, prepared.body, ctx,
                    attempts=None if final else fb.attempts_per_target,
                    headers_timeout=fb.stream_headers_timeout if stream and not final else None,
                    wait_for_keys=final,
                )  # fmt: skip
                data = None if stream else await self.upstream.read_body(resp)
            except GatewayError as err:
                if limiter is not None:
                    limiter.release()
                reason = fallback_reason(err, route.fallback_on_overflow)
                if reason in BREAKER_REASONS:
                    breaker.failure()
                else:
                    breaker.success()  # it answered: the upstream is up
                if reason is None or final:
                    raise _spent(err, notes, tried) from None
                last_err = err
                notes.append(f"{target.name}: {clip(err.message)}")
                self._fell(ctx, target, reason)
                continue
            except BaseException:
                if limiter is not None:
                    limiter.release()
                breaker.release()
                raise
            breaker.success()
            ctx.target = target.name
            return Opened(target, resp, data, prepared.extra, limiter)
        if last_err is not None:
            raise _spent(last_err, notes, tried)
        waits = [b.retry_in() for t in chain if (b := self.breakers.get(t.name)) and b.retry_in()]
        raise OverloadedError(
            f"no target of route {route.name!r} can take the request now: " + "; ".join(notes),
            headers={"retry-after": str(max(1, round(min(waits, default=1.0))))},
        )

    def _skip(
        self, ctx: RequestContext, target: Route, notes: list[str], reason: str, why: str
    ) -> None:
        ctx.skipped += 1
        notes.append(f"{target.name}: skipped, {why}")
        self._fell(ctx, target, reason)

    def _fell(self, ctx: RequestContext, target: Route, reason: str) -> None:
        ctx.fallbacks.append(f"{target.name}:{reason}")
        log_event("upstream_fallback", logging.WARNING, target=target.name, reason=reason)
        if self.on_fallback is not None:
            self.on_fallback(target.name, reason)

    def status(self, targets: list[Route]) -> dict[str, Any]:
        """What ``/readyz`` shows: each target's circuit, each upstream's keys and load."""
        upstreams: dict[str, Any] = {}
        for name, limiter in self.limiters.items():
            pool = self.upstream.pools.get(name)
            entry: dict[str, Any] = dict(pool.status()) if pool is not None else {}
            entry["in_flight"] = limiter.active
            if limiter.limit:
                entry["max_concurrency"] = limiter.limit
            upstreams[name] = entry
        return {
            "targets": {t.name: self.breaker(t).status() for t in targets},
            "upstreams": upstreams,
        }


def _spent(err: GatewayError, notes: list[str], tried: int) -> GatewayError:
    """The last target's error, saying what happened to the ones before it."""
    if not notes:
        return err
    err.message = f"{err.message} (after {'; '.join(notes)})"
    err.args = (err.message,)
    if tried > 1 and not isinstance(err, RateLimitError | OverloadedError):
        err.should_retry = False  # the gateway has already tried elsewhere
    return err
