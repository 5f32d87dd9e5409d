"""UpstreamClient: URL and headers per route, timeouts, retries, upstream errors → GatewayError.

Retries happen only here, i.e. before the client has been sent a byte (design.md item 8):
connect errors and upstream 429/500/502/503/504, with exponential backoff and jitter, honouring
``retry-after`` / ``retry-after-ms`` up to a cap.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Coroutine, Mapping
from typing import Any, Final

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from . import __version__
from .context import CORRELATION_HEADER, RequestContext
from .errors import (
    APIError,
    AuthenticationError,
    BadGatewayError,
    BillingError,
    GatewayError,
    GatewayTimeoutError,
    OverloadedError,
    RateLimitError,
    from_upstream,
)
from .failover.keys import QUOTA_COOLDOWN, KeyPool
from .logs import log_event
from .settings import RetrySettings, Route, TimeoutSettings
from .tracing import end_attempt, start_attempt
from .upstream_failures import connection_failure, redirect_error

_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_MAX_ERROR_BODY: Final = 1 << 20
#: every header aiohttp would otherwise add itself, set here: with all of them present it skips
#: its per-request header merging (issue 19); a route's own ``headers`` override these
_FIXED_HEADERS: Final = {
    "Content-Type": "application/json",
    "User-Agent": f"messages-gateway/{__version__}",
    "Accept": "application/json, text/event-stream",
    "Accept-Encoding": "gzip, deflate",
}


def _retry_delay(attempt: int, headers: Mapping[str, str], retry: RetrySettings) -> float | None:
    """Seconds to wait before the next attempt; None when the server asks for too long."""
    hint = retry_hint(headers)
    if hint is not None:
        return hint if 0 <= hint <= retry.retry_after_cap else None
    return _backoff(attempt, retry)


def _backoff(attempt: int, retry: RetrySettings) -> float:
    base: float = min(retry.backoff_max, retry.backoff_base * 2.0 ** (attempt - 1))
    return base * (0.5 + random.random() / 2)  # "equal jitter"


def retry_hint(headers: Mapping[str, str]) -> float | None:
    """The upstream's ``retry-after-ms`` / ``retry-after`` in seconds, if it gave one."""
    hint: float | None = None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            hint = float(ms) / 1000.0
        except ValueError:
            hint = None
    if hint is None and (sec := headers.get("retry-after")) is not None:
        try:
            hint = float(sec)
        except ValueError:
            hint = None  # an HTTP date: fall back to our own backoff
    return hint


class UpstreamClient:
    """Sends translated requests upstream over the app's one ClientSession."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        timeouts: TimeoutSettings,
        retries: RetrySettings,
        *,
        max_body_bytes: int = 64 * 1024 * 1024,
        pools: Mapping[str, KeyPool] | None = None,
    ) -> None:
        self.session = session
        self.timeouts = timeouts
        self.retries = retries
        self.max_body_bytes = max_body_bytes
        self._headers: dict[tuple[str, int], CIMultiDict[str]] = {}
        #: key pools by upstream name (issue 16); an upstream without one uses route.api_key
        self.pools: dict[str, KeyPool] = dict(pools or {})
        # Parsed once per (route, path): yarl parsing a URL string costs more per request
        # than everything else we do before the upstream call.
        self._urls: dict[tuple[str, str], tuple[URL, str]] = {}  # and "host:port", for errors

    def _route_headers(self, route: Route, pool: KeyPool | None, index: int) -> CIMultiDict[str]:
        h = self._headers.get((route.name, index))
        if h is None:
            h = CIMultiDict(_FIXED_HEADERS)
            h.update(route.headers)
            key = pool.keys[index].secret if pool is not None else route.api_key
            if key:
                h["Authorization"] = f"Bearer {key}"
            self._headers[(route.name, index)] = h
        return h

    def secrets(self, route: Route) -> tuple[str, ...]:
        pool = self.pools.get(route.upstream)
        keys = tuple(k.secret for k in pool.keys) if pool is not None else ()
        return (route.api_key, *keys) if route.api_key else keys

    def pool(self, route: Route) -> KeyPool | None:
        """The route's key pool, None when its upstream has no keys (or no pool)."""
        pool = self.pools.get(route.upstream)
        return pool if pool is not None and pool.keys else None

    def send(
        self, route: Route, path: str, body: bytes, ctx: RequestContext, **kw: Any
    ) -> Coroutine[Any, Any, aiohttp.ClientResponse]:
        """POST ``body`` to ``route.base_url + path``; return a 2xx response, headers read.

        The caller owns the response and must ``release()``/``close()`` it. Failures raise
        GatewayError (mapped by ``errors.from_upstream``); retryable ones are retried first.
        """
        return self.request(route, "POST", path, ctx, data=body, **kw)  # no frame of its own

    async def request(
        self,
        route: Route,
        method: str,
        path: str,
        ctx: RequestContext,
        *,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str | None = None,
        retry: bool = True,
        attempts: int | None = None,
        headers_timeout: float | None = None,
        wait_for_keys: bool = True,
    ) -> aiohttp.ClientResponse:
        """:meth:`send` for any method (the Files and Batch APIs, issue 15): ``data`` is bytes
        or an aiohttp payload (a multipart upload sets its own content type); ``retry=False``
        for a body that can be sent only once (a streamed upload).

        A fallback chain (issue 16) gives each target its ``attempts`` and ``headers_timeout``, and
        ``wait_for_keys=False`` where a next target can answer instead of waiting for a rate-limited
        key pool to cool down. Within the attempts, a key that gets 429 cools down and the next key
        is tried at once; with two keys or more, a key refused with 401/403 leaves the pool."""
        known = self._urls.get((route.name, path)) if params is None else None
        if known is None:
            url = URL(route.base_url + path)
            if params is not None:
                url = url.with_query(params)
            known = (url, f"{url.host}:{url.port}")
            if params is None and len(self._urls) < 4096:
                self._urls[(route.name, path)] = known
        url, where = known
        policy = self.retries
        max_attempts = attempts or policy.max_attempts
        headers_wait = headers_timeout or self.timeouts.headers
        pool = self.pool(route)
        started = time.perf_counter()
        attempt = switches = 0
        while True:
            index = 0
            if pool is not None:
                found = pool.pick()
                if found is None:
                    await self._wait_for_key(pool, where, wait_for_keys, attempt, max_attempts)
                    continue
                index = found
            headers = self._route_headers(route, pool, index).copy()
            headers[CORRELATION_HEADER] = ctx.cid
            if content_type is not None:
                headers["Content-Type"] = content_type
            elif not isinstance(data, bytes):
                del headers["Content-Type"]  # none, or the payload's own
            attempt += 1
            ctx.attempts += 1
            span = start_attempt(ctx, route, method, path, url, attempt, headers)  # when traced
            err: GatewayError
            delay_headers: Mapping[str, str] = {}
            try:
                async with asyncio.timeout(headers_wait):
                    # Never follow a redirect: it would re-post the prompt and the upstream's
                    # headers to whatever origin Location names (issue 10 item 4).
                    resp = await self.session.request(
                        method, url, data=data, headers=headers, allow_redirects=False
                    )
            except aiohttp.ConnectionTimeoutError:
                # Nothing was sent: safe to retry.
                err = GatewayTimeoutError(
                    f"could not connect to upstream {where} within {self.timeouts.connect:g}s"
                )
                _log_failure(route, where, "connect timeout", attempt, span)
            except TimeoutError:
                # The upstream may be working on it: retrying a POST could run it twice.
                _log_failure(route, where, "no response headers in time", attempt, span)
                raise GatewayTimeoutError(
                    f"upstream {where} sent no response headers within {headers_wait:g}s"
                ) from None
            except (aiohttp.ClientError, OSError) as exc:
                cause = connection_failure(exc)
                _log_failure(route, where, cause, attempt, span)
                if isinstance(exc, aiohttp.ClientConnectorError):
                    err = APIError(f"cannot reach upstream {where} ({cause})")
                else:
                    err = APIError(f"connection to upstream {where} failed ({cause})")
            else:
                ctx.upstream_status = resp.status
                end_attempt(span, resp.status)
                ctx.upstream_ms = round((time.perf_counter() - started) * 1000.0, 3)
                if resp.status < 300:
                    return resp
                if resp.status < 400:
                    resp.close()
                    raise redirect_error(resp.status, url, resp.headers.get("Location"))
                try:
                    async with asyncio.timeout(self.timeouts.headers):
                        error_body = await resp.content.read(_MAX_ERROR_BODY)
                except (TimeoutError, aiohttp.ClientError, OSError):
                    error_body = b""
                finally:
                    resp.release()
                err = from_upstream(
                    resp.status,
                    error_body,
                    resp.headers,
                    secrets=self.secrets(route),
                    upstream=where,
                    key_env=route.key_env,
                )
                delay_headers = resp.headers
                if (
                    pool is not None
                    and retry
                    and switches < len(pool)
                    and self._spend_key(pool, index, err, resp.status, delay_headers, attempt)
                ):
                    switches += 1
                    attempt -= 1  # another key, at once: not a retry of this one
                    continue
                if resp.status not in _RETRY_STATUSES or isinstance(err, BillingError):
                    raise err
            delay = (
                None
                if attempt >= max_attempts or not retry
                else _retry_delay(attempt, delay_headers, policy)
            )
            if delay is None:
                raise _after_retries(err, attempt)
            await asyncio.sleep(delay)

    def _spend_key(
        self,
        pool: KeyPool,
        index: int,
        err: GatewayError,
        status: int,
        headers: Mapping[str, str],
        attempt: int,
    ) -> bool:
        """Take a refused key out of turn (429: cool-down; quota: a long one; 401/403 with
        other keys: out of the pool); True when another key can be tried at once. A lone key
        is never taken out of turn: each request asks the upstream, as without a pool."""
        if len(pool) < 2:
            return False
        if isinstance(err, BillingError):
            pool.cool(index, QUOTA_COOLDOWN, "quota")
        elif isinstance(err, RateLimitError):
            hint = retry_hint(headers)  # as long as the upstream asks, however long
            pool.cool(
                index, hint if hint is not None and hint >= 0 else _backoff(attempt, self.retries)
            )
        elif status in (401, 403):
            pool.disable(index, f"HTTP {status}")
        else:
            return False
        return pool.usable()

    async def _wait_for_key(
        self, pool: KeyPool, where: str, wait: bool, attempt: int, max_attempts: int
    ) -> None:
        """Every key is cooling down or out: wait for the first to cool (within the retry
        cap, while attempts remain and ``wait``), else the error that says so."""
        left = pool.wait()
        if left is None:
            raise AuthenticationError(
                f"upstream {where} ({pool.upstream}) refused every key of its pool; see the "
                "upstream_key_disabled log lines (the keys come back on restart)"
            )
        if not wait or attempt >= max_attempts or left > self.retries.retry_after_cap:
            raise RateLimitError(
                f"every key of upstream {pool.upstream!r} is rate-limited for {left:.1f}s more",
                headers={"retry-after": str(max(1, math.ceil(left)))},
            )
        await asyncio.sleep(left)

    async def read_body(self, resp: aiohttp.ClientResponse) -> bytes:
        """The whole body of a non-streaming answer, within the headers timeout and at most
        ``max_body_bytes`` once decompressed (issue 10 item 5). aiohttp inflates in bounded
        steps as it is read, so a compressed bomb never costs more than the cap."""
        limit = self.max_body_bytes
        if resp.content_length is not None and resp.content_length > limit:
            resp.close()
            raise _too_large(limit)
        content = resp.content
        if content.is_eof() and content.exception() is None:
            # a small answer comes in the headers' packets: all of it is here (issue 19)
            body = content.read_nowait()
            resp.release()
            if len(body) > limit:
                raise _too_large(limit)
            return body
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeouts.headers):
                async for chunk in resp.content.iter_any():
                    size += len(chunk)
                    if size > limit:
                        resp.close()
                        raise _too_large(limit)
                    chunks.append(chunk)
        except TimeoutError:
            raise GatewayTimeoutError(
                f"upstream body not received within {self.timeouts.headers:g}s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise APIError(f"upstream connection failed: {type(exc).__name__}") from None
        finally:
            resp.release()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _after_retries(err: GatewayError, attempts: int) -> GatewayError:
    """The one retry rule (issue 11 item 10): once the gateway has retried a failure itself,
    the client is told not to retry it again (``x-should-retry: false``): Claude Code retries
    up to 10 times, and 10 × 3 attempts at an unreachable host kept users waiting ~3 minutes
    for an error. Rate limits and overload stay retryable, with their ``retry-after``, because
    waiting is exactly what fixes them."""
    if attempts > 1 and not isinstance(err, RateLimitError | OverloadedError):
        err.should_retry = False
    return err


def _log_failure(route: Route, where: str, cause: str, attempt: int, span: Any) -> None:
    end_attempt(span, None, cause)
    log_event(
        "upstream_failed",
        logging.WARNING,
        route=route.name,
        upstream=where,
        reason=cause,
        attempts=attempt,
    )


def _too_large(limit: int) -> BadGatewayError:
    return BadGatewayError(
        f"upstream answer exceeds {limit} bytes (server.max_upstream_body_bytes)"
    )
