"""Circuit breakers per target and concurrency limits per upstream (issue 16 items 3-4).

A breaker counts a target's consecutive failures (connect errors, 5xx, timeouts, broken
answers); at ``failures`` it opens and the chain skips the target at no cost for
``cooldown`` seconds; then one real request probes it (half-open): success closes the
circuit, failure opens it for another cool-down, and the other requests skip it meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from ..logs import log_event

CLOSED: Final = "closed"
HALF_OPEN: Final = "half_open"
OPEN: Final = "open"
#: the value of each state in the ``gateway_upstream_circuit_state`` gauge
STATE_VALUE: Final = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class Breaker:
    __slots__ = (
        "_probing", "clock", "cooldown", "failures", "name", "on_change", "state",
        "threshold", "until",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        threshold: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.state = CLOSED
        self.failures = 0
        self.until = 0.0
        self._probing = False
        #: called with (name, state) whenever the state changes (metrics, logs)
        self.on_change: Callable[[str, str], None] | None = None

    def allow(self) -> bool:
        """Whether a request may go to this target now (a half-open probe takes the one
        place; call :meth:`success`, :meth:`failure` or :meth:`release` after it)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self.clock() < self.until:
                return False
            self._set(HALF_OPEN)
        if self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self.failures = 0
        self._probing = False
        if self.state != CLOSED:
            self._set(CLOSED)

    def failure(self) -> None:
        self._probing = False
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self.until = self.clock() + self.cooldown
            self._set(OPEN)

    def release(self) -> None:
        """A probe that ended without telling (cancelled): the next request probes."""
        self._probing = False

    def apply(self, state: str, seconds: float) -> None:
        """Another gateway of the fleet opened (for ``seconds``) or closed this circuit."""
        if state == OPEN:
            self.until = max(self.until, self.clock() + seconds)
            if self.state != OPEN:
                self._set(OPEN)
        elif state == CLOSED and self.state != CLOSED:
            self.failures = 0
            self._set(CLOSED)

    def retry_in(self) -> float:
        return max(0.0, self.until - self.clock()) if self.state == OPEN else 0.0

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"circuit": self.state, "failures": self.failures}
        if self.state == OPEN:
            out["retry_in"] = round(self.retry_in(), 3)
        return out

    def _set(self, state: str) -> None:
        self.state = state
        level = logging.WARNING if state == OPEN else logging.INFO
        log_event("upstream_circuit", level, target=self.name, state=state, failures=self.failures)
        if self.on_change is not None:
            self.on_change(self.name, state)


class Limiter:
    """At most ``limit`` requests at once to one upstream (0: no limit); the others wait in
    order, each at most its own timeout."""

    __slots__ = ("_waiters", "active", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, wait: float) -> bool:
        if not self.limit or (self.active < self.limit and not self._waiters):
            self.active += 1
            return True
        if wait <= 0:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(wait):
                await fut
        except TimeoutError:
            return fut.done() and not fut.cancelled()  # handed over as the time ran out
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed over, but the request is gone: pass it on
            raise
        finally:
            if not fut.done():
                fut.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
        return True  # release() handed its slot over: active already counts it

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes on; active stays the same
                return
        self.active -= 1
