"""The measurement matrix: the run plan, validation that each scenario produces what it claims
(both ways), warm-up, and direct-versus-gateway rounds per scenario and concurrency."""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import aiohttp
import orjson

from tests.perf.loadgen import Request, Window, make_session, percentile, run_window
from tests.perf.scenarios import SCENARIOS, Scenario
from tests.perf.servers import Servers, machine_busy, progress, requests_for

FULL_CONCURRENCY: Final = (1, 16, 64, 256)
QUICK_CONCURRENCY: Final = (1, 16)


@dataclass(frozen=True, slots=True)
class Plan:
    """How much of the matrix to run and for how long."""

    quick: bool
    scenarios: list[str]
    concurrency: list[int]
    #: direct and gateway alternate this many times per cell
    rounds: int
    #: warm-up of a cell's first round (connections open) and of its later rounds
    first_warmup: float
    warmup: float
    #: measured seconds per round and target
    measure: float
    open_streams: int
    inflight: int
    micro: bool
    workers: int | None
    #: cost against body size, stream length and open streams (curves.py)
    curves: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        quick = bool(args.quick)
        concurrency = args.concurrency or list(QUICK_CONCURRENCY if quick else FULL_CONCURRENCY)
        return cls(
            quick=quick,
            scenarios=args.scenarios or list(SCENARIOS),
            concurrency=concurrency,
            rounds=1 if quick else 3,
            first_warmup=0.15 if quick else 0.4,
            warmup=0.1 if quick else 0.2,
            measure=args.duration or (0.4 if quick else 0.8),
            open_streams=args.open_streams
            if args.open_streams is not None
            else (100 if quick else 1000),
            inflight=0 if quick else 1000,
            micro=not args.skip_micro,
            curves=not getattr(args, "skip_curves", False),
            workers=args.workers,
        )


@dataclass(frozen=True, slots=True)
class Check:
    scenario: str
    direct_bytes: int
    gateway_bytes: int
    direct_deltas: int
    gateway_deltas: int


_UPSTREAM_DELTA: Final = {
    "text_delta": b"event: response.output_text.delta\n",
    "input_json_delta": b"event: response.function_call_arguments.delta\n",
}


async def validate(scenarios: Sequence[Scenario], servers: Servers) -> list[Check]:
    """One request per scenario and target; raise if an answer is not what the scenario needs."""
    checks: list[Check] = []
    async with aiohttp.ClientSession() as session:
        for sc in scenarios:
            direct, via = requests_for(sc, servers)
            bodies: list[bytes] = []
            for req in (direct, via):
                async with session.post(req.url, data=req.body, headers=req.headers) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(
                            f"{sc.name}: {req.url} answered {resp.status}: {body[:300]!r}"
                        )
                bodies.append(body)
            d_body, g_body = bodies
            d_deltas = g_deltas = 0
            if sc.stream:
                d_deltas = d_body.count(_UPSTREAM_DELTA[sc.delta_kind])
                g_deltas = g_body.count(b'"delta":{"type":"%s"' % sc.delta_kind.encode())
                if not (d_deltas == g_deltas == sc.deltas) or b"message_stop" not in g_body:
                    raise RuntimeError(
                        f"{sc.name}: expected {sc.deltas} deltas, mock sent {d_deltas}, gateway "
                        f"relayed {g_deltas}; gateway stream tail: {g_body[-300:]!r}"
                    )
            else:
                message = orjson.loads(g_body)
                if message.get("type") != "message" or not message.get("content"):
                    raise RuntimeError(f"{sc.name}: unexpected gateway answer {g_body[:300]!r}")
            checks.append(Check(sc.name, len(d_body), len(g_body), d_deltas, g_deltas))
    return checks


@dataclass(slots=True)
class Cell:
    scenario: Scenario
    concurrency: int
    direct: Window = field(default_factory=Window)
    gateway: Window = field(default_factory=Window)
    #: the gateway's RSS right after the cell
    rss_mb: float = math.nan

    def added(self, q: float, ttfb: bool = False) -> float:
        d = self.direct.ttfb_ns if ttfb else self.direct.latency_ns
        g = self.gateway.ttfb_ns if ttfb else self.gateway.latency_ns
        return percentile(g, q) - percentile(d, q)


async def warm_up(scenarios: Sequence[Scenario], servers: Servers, seconds: float) -> None:
    """Load every code path of both servers once (imports, caches, pools) before measuring."""
    async with make_session(16) as session:
        for sc in scenarios:
            direct, via = requests_for(sc, servers)
            await run_window(session, direct, 16, 0.0, seconds / len(scenarios) / 2)
            await run_window(session, via, 16, 0.0, seconds / len(scenarios) / 2)


async def run_matrix(plan: Plan, scenarios: Sequence[Scenario], servers: Servers) -> list[Cell]:
    probes: dict[str, Callable[[], float]] = {
        "gateway": servers.gateway.cpu,
        "mock": servers.mock.cpu,
        "loadgen": time.process_time,
        "machine": machine_busy,
    }
    cells: list[Cell] = []
    for c in plan.concurrency:
        # One session per concurrency level and target: keep-alive, limit = concurrency.
        async with make_session(c) as s_direct, make_session(c) as s_gateway:
            for sc in scenarios:
                cell = Cell(sc, c)
                direct, via = requests_for(sc, servers)
                for r in range(plan.rounds):
                    warm = plan.first_warmup if r == 0 else plan.warmup
                    cell.direct.merge(
                        await run_window(s_direct, direct, c, warm, plan.measure, probes)
                    )
                    cell.gateway.merge(
                        await run_window(s_gateway, via, c, warm, plan.measure, probes)
                    )
                cell.rss_mb = servers.gateway.rss_mb()
                progress(
                    f"{sc.name:8} c={c:<3} direct {cell.direct.rate:7.0f}/s  gateway "
                    f"{cell.gateway.rate:7.0f}/s  added p50 {cell.added(50) / 1e6:+.2f} ms"
                )
                cells.append(cell)
    return cells


async def alternate(requests: Sequence[Request], concurrency: int, plan: Plan) -> list[Window]:
    """Drive each request in turn, round after round (at least two), each on its own session:
    a neighbour's burst of CPU lands on all of them alike. One merged Window per request."""
    windows = [Window() for _ in requests]
    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(make_session(concurrency)) for _ in requests]
        for r in range(max(plan.rounds, 2)):
            warm = plan.first_warmup if r == 0 else plan.warmup
            for window, session, req in zip(windows, sessions, requests, strict=True):
                window.merge(await run_window(session, req, concurrency, warm, plan.measure))
    return windows
