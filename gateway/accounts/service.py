"""Accounts: who a request is (named key or anonymous), whether its key's limits let it in,
and what it used once it ends (the ledger row, the key's budgets, metrics, the live stats).

The middleware calls :meth:`identify` and :meth:`finish`; the messages handler calls
:meth:`admit` once it knows the model and the body's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..context import RequestContext
from ..logs import log_event
from ..metrics import Metrics
from ..settings import Price, Settings
from .keyfile import KeyFileError, hash_key, load
from .ledger import Ledger
from .limits import KeyState, LimitExceeded, period_start, refusal
from .stats import LiveStats

if TYPE_CHECKING:
    from ..shared import Shared

ANONYMOUS = "anonymous"
#: seconds after which a fleet forgets an in-flight request nobody settled (a gateway killed
#: mid-request): its concurrency place comes back
STALE_IN_FLIGHT = 900
#: settles kept for Redis's return at most (beyond: those places free at STALE_IN_FLIGHT)
MAX_UNSETTLED = 10_000


@dataclass(slots=True)
class RemoteTicket:
    """A request admitted by the fleet's Redis: the second its tokens were reserved in."""

    second: int
    estimate: int


class Accounts:
    def __init__(
        self,
        settings: Settings,
        anonymous_keys: tuple[str, ...],
        metrics: Metrics | None = None,
        ledger: Ledger | None = None,
        shared: Shared | None = None,
    ) -> None:
        self.path = settings.accounts.keys_file
        self.reload_interval = settings.accounts.reload_interval
        self.refresh_interval = settings.ledger.refresh_interval
        self.anonymous = frozenset(hash_key(k) for k in anonymous_keys)
        self.states: dict[str, KeyState] = {}
        self.by_hash: dict[str, KeyState] = {}
        self.prices: Mapping[str, Price] = settings.prices
        self._costs: dict[str, Price | None] = {}
        self.metrics = metrics
        self.ledger = ledger
        self.shared = shared
        #: hashes of keys revoked fleet-wide (Redis), refused whatever the keys file says
        self.revoked: set[str] = set()
        #: settles Redis could not take (down at the end of a request), replayed when it is back
        self._unsettled: list[tuple[list[str], list[Any]]] = []
        if shared is not None and shared.configured:
            shared.handlers.append(self._on_event)
            shared.on_reconnect.append(self.load_revocations)
            shared.on_reconnect.append(self._resettle)
        self.stats = LiveStats()
        self._stamp: tuple[int, int, int] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        if self.path:
            self.reload(strict=True)

    @property
    def auth_on(self) -> bool:
        """Inbound keys are required: anonymous keys set, or a keys file configured (a file
        with no key yet lets nobody in: fail closed)."""
        return bool(self.anonymous or self.path)

    @property
    def open_admin(self) -> bool:
        """No inbound keys at all (a laptop on loopback): the status page needs none either."""
        return not self.auth_on

    # -- keys ------------------------------------------------------------------------------

    def identify(self, given: str) -> tuple[bool, KeyState | None]:
        """(known, its named state); anonymous keys are known with no state."""
        h = hash_key(given)
        if h in self.revoked:
            return False, None
        state = self.by_hash.get(h)
        if state is not None:
            return True, state
        return h in self.anonymous, None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self, *, strict: bool = False) -> bool:
        """Read the keys file again; a key's windows and budgets survive (by name). A broken
        file keeps the keys in force and says why (``strict``: raise, at start-up)."""
        stamp = self._stat()
        try:
            doc = load(self.path)
        except KeyFileError as exc:
            if strict:
                raise
            log_event("keys_reload_failed", logging.ERROR, reason=str(exc)[:200])
            self._stamp = stamp
            return False
        states: dict[str, KeyState] = {}
        by_hash: dict[str, KeyState] = {}
        for entry in doc.keys:
            state = self.states.get(entry.name)
            if state is None:
                state = KeyState(entry)
            else:
                state.entry = entry
            states[entry.name] = state
            if not entry.disabled:
                by_hash[entry.hash] = state
        self.states, self.by_hash, self._stamp = states, by_hash, stamp
        log_event("keys_loaded", count=len(by_hash), where=Path(self.path).name)
        return True

    def reload_if_configured(self) -> None:
        """SIGHUP: read the keys file again, changed or not."""
        if self.path:
            self.reload()

    def reload_if_changed(self) -> None:
        if self.path and self._stat() != self._stamp:
            self.reload()

    async def _settle_remote(self, keys: list[str], args: list[Any]) -> None:
        """Free a request's place in the fleet's count; if Redis cannot take it now, again
        when Redis is back (else the place would stay taken until STALE_IN_FLIGHT)."""
        assert self.shared is not None
        failed = await self.shared.script("settle", keys, args) is None
        if failed and len(self._unsettled) < MAX_UNSETTLED:
            self._unsettled.append((keys, args))

    async def _resettle(self) -> None:
        pending, self._unsettled = self._unsettled, []
        for keys, args in pending:
            await self._settle_remote(keys, args)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "revoke" and isinstance(event.get("hash"), str):
            self.revoked.add(event["hash"])

    async def load_revocations(self) -> None:
        """Every key revoked fleet-wide (``keys revoke`` writes them to Redis too)."""
        shared = self.shared
        if shared is None:
            return
        found = await shared.call("revoked", lambda c: c.smembers(shared.prefix + "revoked"))
        if found is not None:
            self.revoked |= {x.decode() if isinstance(x, bytes) else str(x) for x in found}

    # -- limits ----------------------------------------------------------------------------

    async def admit(self, ctx: RequestContext, model: str, estimate: int) -> None:
        """The named key's limits, before the upstream is asked (raises LimitExceeded or a
        403 for a model the key may not use). With a fleet's Redis up, the windows and the
        in-flight count are the fleet's; without it (or while it is down), this process's."""
        state = ctx.account
        if state is None:
            return
        try:
            shared = self.shared
            if shared is not None and shared.up and state.windowed:
                now = time.time()
                state.precheck(model, now)
                second = int(now)
                lim = state.entry.limits
                k = f"{shared.prefix}key:{state.name}:"
                got = await shared.script(
                    "admit", [k + "conc", k + "rpm", k + "tpm"],
                    [second, lim.concurrent or 0, lim.rpm or 0, lim.tpm or 0, estimate,
                     ctx.request_id, STALE_IN_FLIGHT],
                )  # fmt: skip
                if got is not None:
                    code, count, wait = (int(x) for x in got)
                    if code:
                        raise refusal(state, code, count, wait, estimate)
                    state.active += 1
                    ctx.reservation = RemoteTicket(second, estimate)
                    return
            ctx.reservation = state.admit(model, estimate)
        except LimitExceeded as exc:
            if self.metrics is not None:
                self.metrics.key_limited_by(state.name, exc.limit)
            raise

    def check_model(self, ctx: RequestContext, model: str) -> None:
        state = ctx.account
        if state is not None and not state.allows_model(model):
            from ..errors import PermissionDeniedError

            raise PermissionDeniedError(
                f"key {state.name!r} may not use model {model[:100]!r} (keys file: models)"
            )

    def cost(self, target: str | None, usage: tuple[int, int, int, int] | None) -> float:
        if not usage or not self.prices or not target:
            return 0.0
        if target in self._costs:
            price = self._costs[target]
        else:
            price = self.prices.get(target) or self.prices.get(target.partition(":")[2])
            if len(self._costs) < 4096:
                self._costs[target] = price
        if price is None:
            return 0.0
        inp, out, read, write = usage
        cr = price.input if price.cache_read is None else price.cache_read
        cw = price.input if price.cache_write is None else price.cache_write
        return (inp * price.input + out * price.output + read * cr + write * cw) / 1e6

    # -- the end of a request --------------------------------------------------------------

    def finish(self, ctx: RequestContext, status: int, path: str) -> None:
        """Record what the request used: its key's window and budgets, the ledger row, the
        live stats and the per-key metrics. Cheap: this runs for every request."""
        if not path.startswith("/v1/messages"):
            return
        usage = ctx.usage
        target = ctx.target or ctx.route
        cost = self.cost(target, usage) if usage else 0.0
        tokens = usage[0] + usage[1] + usage[3] if usage else 0
        state = ctx.account
        reservation = ctx.reservation
        now = time.time()
        if state is not None and reservation is not None:
            ctx.reservation = None
            if isinstance(reservation, RemoteTicket):
                state.active -= 1
                state.add(tokens, cost, now)
                if self.shared is not None:
                    k = f"{self.shared.prefix}key:{state.name}:"
                    self.shared.spawn(self._settle_remote(
                        [k + "conc", k + "tpm"],
                        [ctx.request_id, reservation.second, tokens - reservation.estimate],
                    ))  # fmt: skip
            else:
                state.settle(reservation, tokens, cost, now)
        name = state.name if state is not None else ""  # "" in the ledger: anonymous
        ms = ctx.elapsed_ms()
        if ctx.key_name is None and self.auth_on:
            # refused before anyone was known: not a client's usage (a flood of bad keys must
            # not grow the ledger); the live stats still show the error
            self.stats.observe(now, status, ms, ctx.error_type, ctx.route, "unauthenticated")
            return
        if self.ledger is not None:
            u = usage or (0, 0, 0, 0)
            model = ctx.model[:200] if ctx.model else None
            self.ledger.record((
                now, ctx.request_id, name, path[:100], ctx.route, target, model,
                status, ctx.error_type, "true" if ctx.stream else "false", u[0], u[1], u[2],
                u[3], ctx.reasoning, cost, ms,
            ))  # fmt: skip
        self.stats.observe(now, status, ms, ctx.error_type, ctx.route, name or ANONYMOUS)
        if self.metrics is not None and ctx.key_name:
            self.metrics.key_request(ctx.key_name, status, usage, cost)

    # -- background: reloads and budget refreshes -------------------------------------------

    async def start(self) -> None:
        if self.shared is not None and self.shared.up:
            await self.load_revocations()
        if self.ledger is not None:
            await self.ledger.start()
            if self.states:
                await self.refresh()
        if self.path:
            self._tasks.append(asyncio.create_task(self._watch(), name="keys-watch"))
        if self.ledger is not None:
            self._tasks.append(asyncio.create_task(self._refresher(), name="budget-refresh"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.ledger is not None:
            await self.ledger.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.reload_interval)
            self.reload_if_changed()

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            if any(_has_budget(s) for s in self.states.values()):
                try:
                    await self.refresh()
                except Exception as exc:  # the database is down: budgets keep counting here
                    log_event("budget_refresh_failed", logging.ERROR,
                              error_class=type(exc).__name__)  # fmt: skip

    async def refresh(self) -> None:
        """Each key's spend this day and month: the ledger's rows (every worker's) plus this
        process's rows not written yet."""
        assert self.ledger is not None
        now = time.time()
        day0, month0 = period_start(now, False), period_start(now, True)
        totals = await self.ledger.totals(day0, month0)
        # No await from here on: the rows still pending are exactly those not in ``totals``.
        pending: dict[str, list[float]] = {}
        for row in self.ledger.pending:
            ts, key = row[0], row[2]
            if key and ts >= month0:
                t = row[10] + row[11] + row[13]
                acc = pending.setdefault(key, [0, 0.0, 0, 0.0])
                acc[2] += t
                acc[3] += row[15]
                if ts >= day0:
                    acc[0] += t
                    acc[1] += row[15]
        for name, state in self.states.items():
            d_t, d_c, m_t, m_c = totals.get(name, (0, 0.0, 0, 0.0))
            p = pending.get(name, [0, 0.0, 0, 0.0])
            state._roll(now)
            state.today.tokens, state.today.cost = int(d_t + p[0]), d_c + p[1]
            state.this_month.tokens, state.this_month.cost = int(m_t + p[2]), m_c + p[3]

    def status(self) -> dict[str, Any]:
        """Each named key's limits and spend, for the status page (no hashes, no keys)."""
        out = []
        for name, state in sorted(self.states.items()):
            e = state.entry
            out.append({
                "name": name, "admin": e.admin, "disabled": e.disabled, "models": e.models,
                "limits": {k: v for k, v in _limits(e).items() if v is not None},
                "in_flight": state.active,
                "today": {"tokens": state.today.tokens, "cost": round(state.today.cost, 6)},
                "month": {"tokens": state.this_month.tokens,
                          "cost": round(state.this_month.cost, 6)},
            })  # fmt: skip
        return {"keys": out, "anonymous_keys": len(self.anonymous)}


def _limits(entry: Any) -> dict[str, Any]:
    import msgspec

    return msgspec.structs.asdict(entry.limits)


def _has_budget(state: KeyState) -> bool:
    lim = state.entry.limits
    return any(
        v is not None
        for v in (lim.daily_tokens, lim.monthly_tokens, lim.daily_cost, lim.monthly_cost)
    )
