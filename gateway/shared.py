"""A fleet's shared state in Redis or Valkey (issue 18 item 1), or nothing.

Every call has ``redis.timeout``; a failure marks Redis down (one log line, the
``gateway_redis_up`` gauge, ``/readyz`` detail) and the caller falls back to its own local
state; a background task tries again every ``redis.retry_interval``. Redis being down is never
a 5xx. Events between gateways (a circuit opened, a key revoked) go over one pub/sub channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import orjson

from .logs import log_event
from .settings import RedisSettings

T = TypeVar("T")
Handler = Callable[[dict[str, Any]], None]

#: admission of one request against a key's concurrency, rpm and tpm, atomically
ADMIT: Final = """
local now = tonumber(ARGV[1])
local conc, rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local estimate, id, stale = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local function window(key)
  local t = redis.call('HGETALL', key)
  local sum, pairs = 0, {}
  for i = 1, #t, 2 do
    local s, v = tonumber(t[i]), tonumber(t[i + 1])
    if s <= now - 60 then redis.call('HDEL', key, t[i])
    else sum = sum + v; table.insert(pairs, {s, v}) end
  end
  table.sort(pairs, function(a, b) return a[1] < b[1] end)
  return sum, pairs
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - stale)
if conc > 0 then
  local n = redis.call('ZCARD', KEYS[1])
  if n >= conc then return {1, n, 1} end
end
local rn, rp = window(KEYS[2])
if rpm > 0 and rn >= rpm then return {2, rn, rp[1][1] + 60 - now} end
local tn, tp = window(KEYS[3])
if tpm > 0 and tn > 0 and tn + estimate > tpm then
  local need, freed, wait = tn + estimate - tpm, 0, 60
  for _, p in ipairs(tp) do
    freed = freed + p[2]
    if freed >= need then wait = p[1] + 60 - now; break end
  end
  return {3, tn, wait}
end
redis.call('ZADD', KEYS[1], now, id)
redis.call('EXPIRE', KEYS[1], stale)
redis.call('HINCRBY', KEYS[2], now, 1)
redis.call('EXPIRE', KEYS[2], 61)
redis.call('HINCRBY', KEYS[3], now, estimate)
redis.call('EXPIRE', KEYS[3], 61)
return {0, 0, 0}
"""
#: the end of a request: its concurrency place freed, its token reservation made exact
SETTLE: Final = """
redis.call('ZREM', KEYS[1], ARGV[1])
local delta = tonumber(ARGV[3])
if delta ~= 0 and redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], delta)
end
return 0
"""


class Shared:
    def __init__(
        self, settings: RedisSettings, on_state: Callable[[str, bool], None] | None = None
    ) -> None:
        self.settings = settings
        self.prefix = settings.prefix
        self.timeout = settings.timeout
        self.client: Any = None
        self.up = False
        self.down_since: float | None = None
        self.reason = ""
        self.on_state = on_state
        self.handlers: list[Handler] = []
        #: called after Redis comes back (resynchronise what pub/sub may have missed)
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._scripts: dict[str, Any] = {}
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def configured(self) -> bool:
        return bool(self.settings.url)

    @property
    def channel(self) -> str:
        return self.prefix + "events"

    async def start(self) -> None:
        if not self.configured:
            return
        import redis.asyncio as aioredis

        t = self.settings.timeout
        self.client = aioredis.from_url(
            self.settings.url, socket_timeout=t, socket_connect_timeout=t,
            health_check_interval=0, retry_on_timeout=False,
        )  # fmt: skip
        self._scripts = {"admit": self.client.register_script(ADMIT),
                         "settle": self.client.register_script(SETTLE)}  # fmt: skip
        await self._check()
        if not self.up:  # never a failed start: local state until Redis answers
            self._mark_down(self.reason or "unreachable")
        self._tasks.append(asyncio.create_task(self._monitor(), name="redis-monitor"))
        self._tasks.append(asyncio.create_task(self._listen(), name="redis-events"))

    async def close(self) -> None:
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
            self.client = None

    # -- calls, each bounded, each falling back ---------------------------------------------

    async def call(self, what: str, fn: Callable[[Any], Awaitable[T]]) -> T | None:
        """``fn(client)`` within the timeout; None (and Redis marked down) on any failure."""
        if not self.up or self.client is None:
            return None
        try:
            async with asyncio.timeout(self.timeout):
                return await fn(self.client)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._mark_down(f"{what}: {type(exc).__name__}")
            return None

    async def script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self.call(name, lambda _c: self._scripts[name](keys=keys, args=args))

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Fire and forget, kept referenced until done (a request's settle, an event)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def publish(self, event: dict[str, Any]) -> None:
        if self.up:
            data = orjson.dumps(event)
            self.spawn(self.call("publish", lambda c: c.publish(self.channel, data)))

    # -- health ------------------------------------------------------------------------------

    async def _check(self) -> None:
        try:
            async with asyncio.timeout(self.timeout * 4):
                await self.client.ping()
        except Exception as exc:
            self.reason = f"ping: {type(exc).__name__}"
            return
        was = self.up
        self.up, self.down_since, self.reason = True, None, ""
        if self.on_state is not None:
            self.on_state(_where(self.settings.url), True)
        if not was:
            log_event("redis_up", logging.WARNING if self._tasks else logging.INFO,
                      where=_where(self.settings.url))  # fmt: skip
            for fn in self.on_reconnect:
                self.spawn(fn())

    def _mark_down(self, reason: str) -> None:
        if self.up or self.down_since is None:
            self.up = False
            self.down_since = time.time()
            self.reason = reason
            log_event("redis_down", logging.ERROR, reason=reason[:200],
                      where=_where(self.settings.url))  # fmt: skip
            if self.on_state is not None:
                self.on_state(_where(self.settings.url), False)

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self.settings.retry_interval)
            if not self.up:
                await self._check()

    async def _listen(self) -> None:
        """Pub/sub events from the other gateways; resubscribes after Redis comes back."""
        while True:
            if not self.up:
                await asyncio.sleep(self.settings.retry_interval)
                continue
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is not None:
                        self._dispatch(msg.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._mark_down(f"events: {type(exc).__name__}")
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _dispatch(self, data: Any) -> None:
        try:
            event = orjson.loads(data)
        except (orjson.JSONDecodeError, TypeError):
            return
        if isinstance(event, dict):
            for handler in self.handlers:
                handler(event)

    def status(self) -> dict[str, Any]:
        if not self.configured:
            return {"configured": False}
        out: dict[str, Any] = {"configured": True, "up": self.up}
        if not self.up:
            out["down_since"] = self.down_since
            out["reason"] = self.reason
            out["fallback"] = "local state: limits, caches and circuits per gateway"
        return out


def _where(url: str) -> str:
    """host:port of a Redis URL, never its password."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port or 6379}"
    except ValueError:
        return "an unparsable URL"
