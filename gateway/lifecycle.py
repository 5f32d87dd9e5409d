"""What a graceful shutdown has to end: the streams open now and the requests still waiting.

``server.shutdown_grace`` seconds after SIGTERM (issue 5), whatever is left is ended at once
(issue 10 item 2): every open stream gets an ``overloaded_error`` event, or is cut when it is
blocked writing to a client that stopped reading; every request still waiting (for its body,
or for an upstream's headers or non-streamed body) has its deadline moved to now, and the
handler answers 529 ``overloaded_error`` because ``stopping`` is set. Nothing is left for
aiohttp's own shutdown to wait out.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from .errors import OverloadedError
from .relay import StreamRegistry

SHUTTING_DOWN_MESSAGE = "the gateway is shutting down; retry"


class Lifecycle:
    __slots__ = ("draining", "stopping", "streams", "waits")

    def __init__(self) -> None:
        #: watchdogs of the streams open now
        self.streams = StreamRegistry()
        #: deadlines of requests waiting on a body or an upstream (``asyncio.timeout`` objects)
        self.waits: set[asyncio.Timeout] = set()
        #: set at the first moment of a shutdown: /readyz answers 503 from then on
        self.draining = False
        #: set once the grace period is over and what is left is being ended
        self.stopping = False

    def shutting_down(self) -> OverloadedError:
        return OverloadedError(SHUTTING_DOWN_MESSAGE, headers={"retry-after": "1"})

    def wait(self, when: float | None) -> Wait:
        """``asyncio.timeout_at(when)`` that a shutdown ends too: registered in ``waits``
        while the block runs (``when`` None: no limit but the shutdown's)."""
        return Wait(self.waits, when)

    def end_all(self) -> int:
        """End every open stream and waiting request now; returns how many there were."""
        self.stopping = True
        ended = len(self.streams) + len(self.waits)
        for watchdog in self.streams:
            watchdog.abort(self.shutting_down(), "shutdown")
        now = asyncio.get_running_loop().time()
        for wait in list(self.waits):
            if not wait.expired():
                wait.reschedule(now)
        return ended


class Wait:
    """The context manager of :meth:`Lifecycle.wait` (a class, not a generator: it runs on
    every request)."""

    __slots__ = ("_timeout", "_waits")

    def __init__(self, waits: set[asyncio.Timeout], when: float | None) -> None:
        self._waits = waits
        self._timeout = asyncio.timeout_at(when)

    async def __aenter__(self) -> asyncio.Timeout:
        timeout = await self._timeout.__aenter__()
        self._waits.add(timeout)
        return timeout

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._waits.discard(self._timeout)
        await self._timeout.__aexit__(kind, exc, tb)  # an expiry is raised as TimeoutError
