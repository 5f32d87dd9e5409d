"""The gateway's memory probes: RSS sampling, requests waiting on upstream headers, and many
open streams through a fresh gateway in front of a mock whose answers drip."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson

from tests.perf.loadgen import HeldStreams, Request, burst, hold_streams
from tests.perf.scenarios import prose, text_stream_body
from tests.perf.servers import (
    HOST,
    CpuPlan,
    Proc,
    Servers,
    gateway_headers,
    start_servers,
    stop_servers,
)

# The drip mock holds streams open: every answer is one text of DRIP_WORDS words, one event
# every DRIP_INTERVAL seconds (~30 s a stream), so streams stay open while memory is sampled.
DRIP_WORDS: Final = 150
DRIP_INTERVAL: Final = 0.2
# mock:delay holds the response headers back this long (the in-flight memory probe).
INFLIGHT_DELAY: Final = 4.0


@dataclass(slots=True)
class Memory:
    idle_mb: float = math.nan
    after_matrix_mb: float = math.nan
    peak_matrix_mb: float = math.nan
    inflight: int = 0
    inflight_ok: int = 0
    inflight_peak_mb: float = math.nan
    streams_idle_mb: float = math.nan
    streams: HeldStreams | None = None
    streams_peak_mb: float = math.nan
    streams_after_mb: float = math.nan
    notes: list[str] = field(default_factory=list)


async def sample_peak(proc: Proc, until: asyncio.Event, every: float = 0.1) -> float:
    peak = 0.0
    while not until.is_set():
        peak = max(peak, proc.rss_mb())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(until.wait(), every)
    return max(peak, proc.rss_mb())


async def measure_inflight(servers: Servers, count: int, mem: Memory) -> None:
    """RSS while ``count`` requests wait on upstream headers (``mock:delay``): no open
    client streams yet, but ``count`` client connections and upstream requests in flight."""
    body = orjson.dumps(
        {
            "model": "claude-sonnet-5-5",
            "max_tokens": 1024,
            "stream": True,
            "messages": [{"role": "user", "content": f"mock:delay={INFLIGHT_DELAY:g} hold on"}],
        }
    )
    req = Request(servers.gateway_url, body, gateway_headers(), True)
    done = asyncio.Event()

    async def fire() -> tuple[int, int, list[str]]:
        try:
            return await burst(req, count, limit_s=INFLIGHT_DELAY + 60)
        finally:
            done.set()

    (ok, failed, errors), peak = await asyncio.gather(fire(), sample_peak(servers.gateway, done))
    mem.inflight, mem.inflight_ok, mem.inflight_peak_mb = count, ok, peak
    if failed:
        mem.notes.append(f"in-flight probe: {failed} of {count} failed ({'; '.join(errors)})")


def serve_drip_mock(port: int, answers: int, words: int, interval: float) -> None:
    """Run the built-in mock with ``answers`` scripted slow streams queued at start-up.

    Used by the open-streams probe (``python -c`` in a separate process): each answer is one
    text of ``words`` words, one event every ``interval`` seconds. Scripting happens once, in
    the mock's own process, with its public ``Script`` API; no request from the benchmark
    scripts anything.
    """
    from aiohttp import web

    from gateway.mock_upstream import MockUpstream, Script, Text

    mock = MockUpstream(max_recorded=10)
    text = prose(words)
    mock.enqueue(
        *(Script(items=[Text(text)], delay_between_events=interval) for _ in range(answers))
    )
    web.run_app(mock.app, host=HOST, port=port, access_log=None, print=None)


async def measure_open_streams(
    cpu: CpuPlan, log_dir: Path, workers: int | None, count: int, mem: Memory
) -> None:
    """A fresh gateway in front of a mock whose answers drip for ~30 s: warm it up, read its
    idle RSS, open ``count`` streams, sample RSS while all are open, close them, read again."""

    def drip_cmd(port: int) -> list[str]:
        code = (
            "from tests.perf.memory import serve_drip_mock; "
            f"serve_drip_mock({port}, {count + 500}, {DRIP_WORDS}, {DRIP_INTERVAL})"
        )
        return [sys.executable, "-c", code]

    servers = await start_servers(cpu, log_dir, workers, drip_cmd, "-streams")
    try:
        await _open_streams(servers, count, mem)
    finally:
        stop_servers(servers)


async def _open_streams(servers: Servers, count: int, mem: Memory) -> None:
    stream_body = orjson.dumps(text_stream_body(20))
    req = Request(servers.gateway_url, stream_body, gateway_headers(), True)
    small = Request(
        servers.gateway_url,
        orjson.dumps({**orjson.loads(stream_body), "stream": False}),
        gateway_headers(),
        False,
    )
    # Warm-up by count, not time: every answer of this mock takes one of its queued scripts.
    await burst(small, 100, limit_s=30)
    await burst(small, 100, limit_s=30)

    async def nothing(_: HeldStreams) -> None:
        return None

    await hold_streams(req, 20, while_open=nothing)  # warm-up: the streaming path
    await asyncio.sleep(1.0)
    mem.streams_idle_mb = servers.gateway.rss_mb()

    async def sample(state: HeldStreams) -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(sample_peak(servers.gateway, stop))
        await asyncio.sleep(2.0)
        stop.set()
        mem.streams_peak_mb = await task

    mem.streams = await hold_streams(req, count, while_open=sample)
    await asyncio.sleep(2.0)
    mem.streams_after_mb = servers.gateway.rss_mb()
    held = mem.streams
    if held.opened < count:
        mem.notes.append(
            f"open-streams probe: {held.opened} of {count} streams open "
            f"({held.failed} failed, {held.ended_early} ended early; "
            f"{'; '.join(held.error_samples)})"
        )
