"""A small closed-loop HTTP load generator on asyncio + aiohttp.

``concurrency`` workers share one ``ClientSession`` (keep-alive, connection limit =
concurrency); each sends the same request again as soon as the previous answer has been read
to the end. Per request it records, with ``perf_counter_ns``:

* latency: request start → last body byte (for a stream: the whole-stream time);
* for streams, time to first byte: request start → first body chunk.

A window has a warm-up (requests started in it are not recorded), then a measured part of
fixed duration; requests started in the measured part are recorded even if they finish after
it (the workers then stop sending). Throughput counts the requests that *finished* inside the
measured part, divided by its length.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import aiohttp

__all__ = [
    "HeldStreams",
    "Request",
    "Window",
    "burst",
    "hold_streams",
    "make_session",
    "percentile",
    "run_window",
]

#: first body bytes of a stream, read as they come (aiohttp returns what is buffered)
READ_SIZE: Final = 2**16
MAX_ERROR_SAMPLES: Final = 3
#: the gateway's own measure of its overhead (total minus upstream time), in ms
OVERHEAD_HEADER: Final = "x-gateway-overhead-ms"


@dataclass(frozen=True, slots=True)
class Request:
    """What every worker sends: ``POST url`` with ``body``."""

    url: str
    body: bytes
    headers: Mapping[str, str]
    stream: bool


@dataclass(slots=True)
class Window:
    """The results of one measured window (or several merged with ``merge``)."""

    latency_ns: list[int] = field(default_factory=list)
    ttfb_ns: list[int] = field(default_factory=list)
    #: the gateway's own ``x-gateway-overhead-ms`` answers, when it sends that header
    overhead_ms: list[float] = field(default_factory=list)
    finished: int = 0
    seconds: float = 0.0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    #: CPU seconds used during the measured part, per probe name
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Requests (or whole streams) finished per second of measured time."""
        return self.finished / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: Window) -> None:
        self.latency_ns += other.latency_ns
        self.ttfb_ns += other.ttfb_ns
        self.overhead_ms += other.overhead_ms
        self.finished += other.finished
        self.seconds += other.seconds
        self.errors += other.errors
        room = MAX_ERROR_SAMPLES - len(self.error_samples)
        self.error_samples += other.error_samples[:room]
        for name, value in other.cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + value


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of unsorted samples; NaN when empty."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


def make_session(concurrency: int) -> aiohttp.ClientSession:
    """A session for one concurrency level: keep-alive, at most ``concurrency`` connections."""
    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, keepalive_timeout=120, force_close=False
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=120, sock_connect=10),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )


async def run_window(
    session: aiohttp.ClientSession,
    request: Request,
    concurrency: int,
    warmup: float,
    measure: float,
    cpu_probes: Mapping[str, Callable[[], float]] | None = None,
) -> Window:
    """Drive ``request`` with ``concurrency`` workers: ``warmup`` seconds, then ``measure``.

    ``cpu_probes`` (name → CPU seconds used so far) are read at the start and the end of the
    measured part; the window records the difference. The garbage collector of this process
    is run before the window and paused during it, so its pauses do not land in the samples.
    """
    probes = dict(cpu_probes or {})
    result = Window()
    start_ns = time.perf_counter_ns()
    measure_from = start_ns + int(warmup * 1e9)
    measure_to = measure_from + int(measure * 1e9)
    url, body, headers, stream = request.url, request.body, request.headers, request.stream
    latency = result.latency_ns
    ttfb = result.ttfb_ns
    overhead = result.overhead_ms

    async def worker() -> None:
        while True:
            t0 = time.perf_counter_ns()
            if t0 >= measure_to:
                return
            first = 0
            reported: str | None = None
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    if stream:
                        content = resp.content
                        chunk = await content.readany()
                        first = time.perf_counter_ns()
                        while chunk:
                            chunk = await content.readany()
                    else:
                        await resp.read()
                    status = resp.status
                    reported = resp.headers.get(OVERHEAD_HEADER)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                status = -1
                error = f"{type(exc).__name__}: {exc}"[:200]
            else:
                error = f"HTTP {status}" if status != 200 else ""
            t1 = time.perf_counter_ns()
            if error:
                result.errors += 1
                if len(result.error_samples) < MAX_ERROR_SAMPLES:
                    result.error_samples.append(error)
                if status == -1:
                    await asyncio.sleep(0.01)  # a refused connection must not spin
                continue
            if t0 >= measure_from:
                latency.append(t1 - t0)
                if stream:
                    ttfb.append(first - t0)
                if reported is not None:
                    overhead.append(float(reported))
            if measure_from <= t1 <= measure_to:
                result.finished += 1

    async def sample_cpu() -> None:
        await asyncio.sleep(max(0.0, (measure_from - time.perf_counter_ns()) / 1e9))
        before = {name: read() for name, read in probes.items()}
        await asyncio.sleep(max(0.0, (measure_to - time.perf_counter_ns()) / 1e9))
        result.cpu = {name: read() - before[name] for name, read in probes.items()}

    gc.collect()
    gc.disable()
    try:
        await asyncio.gather(sample_cpu(), *(worker() for _ in range(concurrency)))
    finally:
        gc.enable()
    result.seconds = measure
    return result


@dataclass(slots=True)
class HeldStreams:
    """The outcome of ``hold_streams``."""

    requested: int
    opened: int = 0
    failed: int = 0
    ended_early: int = 0
    open_seconds: float = 0.0
    error_samples: list[str] = field(default_factory=list)


async def hold_streams(
    request: Request,
    count: int,
    *,
    while_open: Callable[[HeldStreams], Awaitable[None]],
    open_timeout: float = 60.0,
) -> HeldStreams:
    """Open ``count`` streaming requests at once and keep them open.

    Each stream is read up to its first body chunk, then left unread. When all are open (or
    ``open_timeout`` passed), ``while_open(state)`` runs (e.g. sampling the gateway's memory)
    and then every connection is closed by the client, as a user pressing Ctrl-C would.
    """
    state = HeldStreams(requested=count)
    all_open = asyncio.Event()
    release = asyncio.Event()
    settled = 0

    def settle() -> None:
        nonlocal settled
        settled += 1
        if settled == count:
            all_open.set()

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            try:
                async with session.post(
                    request.url, data=request.body, headers=request.headers
                ) as resp:
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                    first = await resp.content.readany()
                    if not first or resp.content.at_eof():
                        state.ended_early += 1
                    else:
                        state.opened += 1
                    settle()
                    await release.wait()
                    resp.close()  # drop the connection mid-stream
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                state.failed += 1
                if len(state.error_samples) < MAX_ERROR_SAMPLES:
                    state.error_samples.append(f"{type(exc).__name__}: {exc}"[:200])
                settle()

        t0 = time.perf_counter()
        tasks = [asyncio.create_task(one()) for _ in range(count)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_open.wait(), open_timeout)
        state.open_seconds = time.perf_counter() - t0
        try:
            await while_open(state)
        finally:
            release.set()
            await _finish(tasks, 30.0)
    return state


async def _finish(tasks: Sequence[asyncio.Task[None]], limit_s: float) -> None:
    """Wait for ``tasks`` up to ``limit_s`` seconds, then cancel the rest."""
    _, pending = await asyncio.wait(tasks, timeout=limit_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)


async def burst(request: Request, count: int, *, limit_s: float) -> tuple[int, int, list[str]]:
    """Send ``count`` requests at once, each read to the end; (succeeded, failed, errors)."""
    ok = failed = 0
    samples: list[str] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    client_timeout = aiohttp.ClientTimeout(total=limit_s, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:

        async def one() -> None:
            nonlocal ok, failed
            try:
                async with session.post(
                    request.url, data=request.body, headers=request.headers
                ) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                ok += 1
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                failed += 1
                if len(samples) < MAX_ERROR_SAMPLES:
                    samples.append(f"{type(exc).__name__}: {exc}"[:200])

        await _finish([asyncio.create_task(one()) for _ in range(count)], limit_s + 5)
    return ok, failed, samples
