"""How the gateway's cost grows with work (issue 19 item 2): added latency and the gateway's
CPU per request against body size (1 KB → 1 MB), stream length (10 → 10,000 events), and RSS
against streams held open at once (1 → 2,000). Each point alternates direct and gateway rounds
in one run, as the matrix does. ``render_curves`` writes the table; ``plot_curves`` the PNGs
(matplotlib, the ``perf`` extra). A cost that grows worse than linearly is flagged: per unit of
work (KB, event, stream) the largest point must cost at most twice the middle one."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson

from tests.perf.loadgen import Request, make_session, percentile, run_window
from tests.perf.matrix import Plan
from tests.perf.memory import Memory, measure_open_streams
from tests.perf.scenarios import MAX_TOKENS, MODEL, text_stream_body, translate_for_upstream
from tests.perf.servers import (
    DIRECT_HEADERS,
    SIGNING_KEY,
    CpuPlan,
    Servers,
    gateway_headers,
    progress,
)

BODY_KB: Final = (1, 10, 100, 1000)
STREAM_EVENTS: Final = (10, 100, 1000, 10000)
OPEN_STREAMS: Final = (1, 250, 1000, 2000)


@dataclass(slots=True)
class Point:
    x: int
    added_p50_ms: float
    gw_cpu_us: float
    direct_p50_ms: float


@dataclass(slots=True)
class Curves:
    body: list[Point] = field(default_factory=list)
    stream: list[Point] = field(default_factory=list)
    #: (streams open, RSS MiB while open)
    streams_rss: list[tuple[int, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _sized_body(kb: int) -> dict[str, object]:
    words = max(1, kb * 1024 // 8)  # "payload " is 8 bytes
    return {"model": MODEL, "max_tokens": MAX_TOKENS, "stream": False,
            "messages": [{"role": "user", "content": "payload " * words}]}  # fmt: skip


async def _point(servers: Servers, anthropic: bytes, stream: bool, x: int, rounds: int,
                 measure: float) -> Point:  # fmt: skip
    responses = translate_for_upstream(anthropic, servers.mock.base + "/v1", SIGNING_KEY.encode())
    direct = Request(servers.mock_url, responses, DIRECT_HEADERS, stream)
    via = Request(servers.gateway_url, anthropic, gateway_headers(), stream)
    probes = {"gateway": servers.gateway.cpu}
    d_lat: list[int] = []
    g_lat: list[int] = []
    cpu = 0.0
    done = 0
    async with make_session(1) as s_direct, make_session(1) as s_gateway:
        for r in range(rounds):
            warm = 0.3 if r == 0 else 0.1
            d = await run_window(s_direct, direct, 1, warm, measure)
            g = await run_window(s_gateway, via, 1, warm, measure, probes)
            d_lat += d.latency_ns
            g_lat += g.latency_ns
            cpu += g.cpu.get("gateway", 0.0)
            done += g.finished
    d50, g50 = percentile(d_lat, 50) / 1e6, percentile(g_lat, 50) / 1e6
    return Point(x, round(g50 - d50, 3), round(cpu / done * 1e6, 1) if done else math.nan,
                 round(d50, 3))  # fmt: skip


async def measure_curves(plan: Plan, servers: Servers) -> Curves:
    out = Curves()
    rounds = 2 if plan.quick else 3
    measure = 0.4 if plan.quick else 0.8
    for kb in BODY_KB:
        out.body.append(await _point(servers, orjson.dumps(_sized_body(kb)), False, kb,
                                     rounds, measure))  # fmt: skip
        progress(f"curves: body {kb} KB added p50 {out.body[-1].added_p50_ms:+.2f} ms")
    for n in STREAM_EVENTS:
        out.stream.append(await _point(servers, orjson.dumps(text_stream_body(n)), True, n,
                                       rounds, measure))  # fmt: skip
        progress(f"curves: stream {n} events added p50 {out.stream[-1].added_p50_ms:+.2f} ms")
    out.notes += _superlinear("body size", "KB", out.body)
    out.notes += _superlinear("stream length", "event", out.stream)
    return out


async def measure_stream_memory(plan: Plan, cpu: CpuPlan, log_dir: Path, out: Curves) -> None:
    for count in OPEN_STREAMS if not plan.quick else (1, 250):
        mem = Memory()
        await measure_open_streams(cpu, log_dir, plan.workers, count, mem)
        out.streams_rss.append((count, round(mem.streams_peak_mb, 1)))
        progress(f"curves: {count} open streams, RSS {mem.streams_peak_mb:.1f} MiB")
    pts = out.streams_rss
    if len(pts) >= 3:
        (n1, r1), (n2, r2) = pts[len(pts) // 2], pts[-1]
        base = pts[0][1]
        per_mid, per_end = (
            (r1 - base) / max(1, n1 - pts[0][0]),
            (r2 - base) / max(1, n2 - pts[0][0]),
        )
        if per_mid > 0 and per_end > 2 * per_mid:
            out.notes.append(f"open streams: {per_end * 1024:.0f} KiB a stream at {n2} vs "
                             f"{per_mid * 1024:.0f} KiB at {n1}: worse than linear")  # fmt: skip


def _superlinear(what: str, unit: str, points: list[Point]) -> list[str]:
    if len(points) < 3:
        return []
    mid, end = points[len(points) // 2], points[-1]
    per_mid, per_end = mid.gw_cpu_us / mid.x, end.gw_cpu_us / end.x
    if per_end > 2 * per_mid:
        return [f"{what}: gateway CPU {per_end:.2f} µs a {unit} at {end.x} vs {per_mid:.2f} at "
                f"{mid.x}: worse than linear"]  # fmt: skip
    return []


def render_curves(c: Curves) -> str:
    lines = ["| request body | added p50 ms (c=1) | gateway CPU µs/request | direct p50 ms |",
             "|--:|--:|--:|--:|"]  # fmt: skip
    lines += [f"| {p.x:,} KB | {p.added_p50_ms:+.3f} | {p.gw_cpu_us:,.0f} | {p.direct_p50_ms:.3f} |"
              for p in c.body]  # fmt: skip
    lines += ["", "| stream length | added p50 ms, whole stream (c=1) | gateway CPU µs/stream "
              "| direct p50 ms |", "|--:|--:|--:|--:|"]  # fmt: skip
    lines += [f"| {p.x:,} events | {p.added_p50_ms:+.3f} | {p.gw_cpu_us:,.0f} | "
              f"{p.direct_p50_ms:.3f} |" for p in c.stream]  # fmt: skip
    if c.streams_rss:
        lines += ["", "| streams open at once | gateway RSS MiB |", "|--:|--:|"]
        lines += [f"| {n:,} | {mb:.1f} |" for n, mb in c.streams_rss]
    lines += ["", "Growth: " + ("; ".join(c.notes) if c.notes else
                                "every curve is linear or better (no point costs more than "
                                "twice the middle one per unit of work).")]  # fmt: skip
    return "\n".join(lines)


def plot_curves(c: Curves, directory: Path) -> list[Path]:
    """PNGs of the three curves (needs matplotlib: ``pip install -e '.[perf]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        progress("curves: matplotlib not installed (the perf extra): no plots")
        return []
    made = []
    for name, points, xlabel in (("body", c.body, "request body (KB)"),
                                 ("stream", c.stream, "stream length (events)")):  # fmt: skip
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.6))
        xs = [p.x for p in points]
        ax.plot(xs, [p.gw_cpu_us for p in points], "o-", label="gateway CPU µs per request")
        ax.plot(xs, [p.added_p50_ms * 1000 for p in points], "s--", label="added p50 (µs)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        ax.set_title(f"messages-gateway: cost against {xlabel.split(' (')[0]}")
        path = directory / f"curve-{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    if c.streams_rss:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot([n for n, _ in c.streams_rss], [mb for _, mb in c.streams_rss], "o-")
        ax.set_xlabel("streams open at once")
        ax.set_ylabel("gateway RSS (MiB)")
        ax.grid(True, alpha=0.3)
        ax.set_title("messages-gateway: memory against open streams")
        path = directory / "curve-open-streams.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made
