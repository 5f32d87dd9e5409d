"""The markdown report: the targets of issue 19 with PASS/MISS, the latency and throughput
tables, memory, micro-benchmarks and the scenarios as run."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import importlib.util
import math
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from gateway import __version__
from tests.perf.chain import ChainRow, render_chain
from tests.perf.curves import Curves, render_curves
from tests.perf.features import FeatureRow, render_features
from tests.perf.loadgen import Window, percentile
from tests.perf.matrix import Cell, Check, Plan
from tests.perf.memory import DRIP_INTERVAL, INFLIGHT_DELAY, Memory
from tests.perf.micro import MicroRow
from tests.perf.micro import render as render_micro
from tests.perf.scenarios import SCENARIOS
from tests.perf.servers import CpuPlan


def ms(ns: float) -> str:
    return "—" if math.isnan(ns) else f"{ns / 1e6:.2f}"


def plus_ms(ns: float) -> str:
    return "—" if math.isnan(ns) else f"{ns / 1e6:+.2f}"


def busy(w: Window, *names: str) -> str:
    """CPU % of the named probes during the measured part (100 = one core)."""
    return f"{sum(w.cpu.get(n, 0.0) for n in names) / w.seconds * 100:.0f}" if w.seconds else "—"


def other_busy(w: Window) -> str:
    """CPU % spent outside our three processes: other tenants, steal, unattributed kernel."""
    if not w.seconds or "machine" not in w.cpu:
        return "—"
    ours = sum(w.cpu.get(n, 0.0) for n in ("gateway", "mock", "loadgen"))
    return f"{max(0.0, w.cpu['machine'] - ours) / w.seconds * 100:.0f}"


def cpu_per_req(w: Window) -> str:
    return f"{w.cpu.get('gateway', 0.0) / w.finished * 1e6:.0f}" if w.finished else "—"


def table(header: Sequence[str], rows: list[list[str]], align: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


Column = tuple[str, Callable[[Cell], str]]


def _col_p(q: float, side: str, ttfb: bool = False) -> Column:
    def get(c: Cell) -> str:
        w = c.direct if side == "direct" else c.gateway
        return ms(percentile(w.ttfb_ns if ttfb else w.latency_ns, q))

    return f"{'TTFB p' if ttfb else 'p'}{q:g} {side}", get


def _col_added(q: float, ttfb: bool = False) -> Column:
    return f"added {'TTFB ' if ttfb else ''}p{q:g}", lambda c: plus_ms(c.added(q, ttfb))


_HEAD: Final[list[Column]] = [
    ("scenario", lambda c: c.scenario.name),
    ("c", lambda c: str(c.concurrency)),
    ("{unit}/s direct", lambda c: f"{c.direct.rate:,.0f}"),
    ("{unit}/s gw", lambda c: f"{c.gateway.rate:,.0f}"),
]
_TAIL: Final[list[Column]] = [
    ("gw CPU µs/{unit}", lambda c: cpu_per_req(c.gateway)),
    ("gw core %", lambda c: busy(c.gateway, "gateway")),
    ("mock+loadgen %", lambda c: busy(c.gateway, "mock", "loadgen")),
    ("other CPU %", lambda c: other_busy(c.gateway)),
    ("gw RSS MiB", lambda c: f"{c.rss_mb:.0f}"),
    ("errors d/g", lambda c: f"{c.direct.errors}/{c.gateway.errors}"),
]
PLAIN_COLUMNS: Final[list[Column]] = [
    *_HEAD,
    _col_p(50, "direct"), _col_p(50, "gw"), _col_added(50),
    _col_p(99, "direct"), _col_p(99, "gw"), _col_added(99),
    ("gw says p50", lambda c: ms(percentile(c.gateway.overhead_ms, 50) * 1e6)),
    *_TAIL,
]  # fmt: skip
STREAM_COLUMNS: Final[list[Column]] = [
    *_HEAD,
    _col_p(50, "direct", ttfb=True), _col_p(50, "gw", ttfb=True),
    _col_added(50, ttfb=True), _col_added(99, ttfb=True),
    _col_p(50, "direct"), _col_p(50, "gw"), _col_added(50),
    _col_p(99, "direct"), _col_p(99, "gw"), _col_added(99),
    *_TAIL,
]  # fmt: skip


def render_cells(cells: list[Cell], columns: list[Column], unit: str) -> str:
    header = [name.format(unit=unit) for name, _ in columns]
    rows = [[get(cell) for _, get in columns] for cell in cells]
    return table(header, rows, ["---"] + ["--:"] * (len(columns) - 1))


@dataclass(frozen=True, slots=True)
class Target:
    what: str
    measured: str
    ok: bool | None  # None: not measured in this run
    note: str = ""


def _find(cells: list[Cell], name: str, c: int | None = None) -> list[Cell]:
    return [x for x in cells if x.scenario.name == name and (c is None or x.concurrency == c)]


_FORMATS: Final = {"ms": "{:.2f} ms", "MiB": "{:.1f} MiB", "/s": "{:,.0f}/s"}


def _verdict(what: str, value: float, limit: float, unit: str, note: str) -> Target:
    """PASS/MISS of ``value`` against ``limit`` (a floor for rates, a ceiling otherwise)."""
    if math.isnan(value):
        return Target(what, "not measured", None, note)
    fmt = _FORMATS[unit]
    ok = value >= limit if unit == "/s" else value <= limit
    if not ok:
        miss = fmt.format(abs(value - limit))
        note = f"misses by {miss} ({value / limit:.2f}× the target). {note}".strip()
    return Target(what, fmt.format(value), ok, note)


def _added(cells: list[Cell], name: str, q: float, what: str, limit_ms: float) -> Target:
    found = _find(cells, name, 1)
    if not found:
        return Target(what, "not measured", None)
    d, g = found[0].direct, found[0].gateway
    note = (
        f"direct {ms(percentile(d.latency_ns, q))} ms, gateway {ms(percentile(g.latency_ns, q))} ms"
    )
    return _verdict(what, found[0].added(q) / 1e6, limit_ms, "ms", note)


def _rate_at(cells: list[Cell], name: str, c: int, what: str, limit: float) -> Target:
    found = _find(cells, name, c)
    if not found:
        return Target(what, "not measured", None)
    g, d = found[0].gateway, found[0].direct
    cpu = g.cpu.get("gateway", 0.0)
    per = cpu / g.finished if g.finished else math.nan
    note = (
        f"direct {d.rate:,.0f}/s (gateway ÷ direct {g.rate / d.rate if d.rate else 0:.2f}); "
        f"gateway core {cpu / g.seconds * 100:.0f}% busy, {per * 1e6:.0f} µs CPU each "
        f"(≈{1 / per:,.0f}/s at 100% of one core)"
    )
    return _verdict(what, g.rate, limit, "/s", note)


def _ttfb(cells: list[Cell]) -> Target:
    what = "added time to first byte, 50-delta streams, c=1, p50 ≤ 0.2 ms"
    found = _find(cells, "text50", 1)
    if not found:
        return Target(what, "not measured", None)
    cell = found[0]
    note = (
        f"direct {ms(percentile(cell.direct.ttfb_ns, 50))} ms, "
        f"gateway {ms(percentile(cell.gateway.ttfb_ns, 50))} ms"
    )
    return _verdict(what, cell.added(50, ttfb=True) / 1e6, 0.2, "ms", note)


def _micro_rate(micro: list[MicroRow]) -> Target:
    what = "SSE decoder + translator + encoder ≥ 1,000,000 upstream events/s, one core"
    rows = {r.key: r for r in micro}
    main = rows.get("decode_translate_text200")
    if main is None:
        return Target(what, "not measured", None)
    keys = ("decode_translate_tool100", "decode_translate_chat200", "translate_text200")
    others = [rows[k] for k in keys if k in rows]
    note = "text deltas, 4 KiB chunks; " + "; ".join(f"{r.what}: {r.value:,.0f}/s" for r in others)
    return _verdict(what, main.value, 1_000_000, "/s", note)


def _streams_rss(mem: Memory, curves: Curves | None) -> Target:
    what = "RSS with 2,000 open streams ≤ 150 MB"
    points = dict(curves.streams_rss) if curves is not None else {}
    if 2000 in points:
        return _verdict(what, points[2000], 150, "MiB", "the open-streams curve's last point")
    held = mem.streams
    if held is None:
        return Target(what, "not measured", None)
    note = f"{held.opened:,} of {held.requested:,} streams open at once"
    if held.opened < 2000:
        return Target(what, f"{mem.streams_peak_mb:.1f} MiB", None, note + "; no verdict")
    return _verdict(what, mem.streams_peak_mb, 150, "MiB", note)


def evaluate(
    cells: list[Cell], micro: list[MicroRow], mem: Memory, curves: Curves | None = None
) -> list[Target]:
    """Each target of issue 19 with its figure from this run (``make soak`` shows the third
    memory target, RSS flat over a soak)."""
    idle_note = (
        f"after warm-up; {mem.after_matrix_mb:.1f} MiB after the whole matrix "
        f"(peak {mem.peak_matrix_mb:.1f} MiB during it)"
    )
    return [
        _added(cells, "small", 50, "added latency, small request, c=1, p50 ≤ 0.3 ms", 0.3),
        _rate_at(cells, "small", 16, "small non-streamed requests/s at c=16 ≥ 6,000", 6000),
        _added(cells, "cc150k", 50, "added latency, 150 KB request, c=1, p50 ≤ 0.8 ms", 0.8),
        _rate_at(cells, "text50", 16, "whole 50-delta streams/s at c=16 ≥ 3,000", 3000),
        _rate_at(cells, "text50burst", 16, "… the mock writing each stream at once", 3000),
        _ttfb(cells),
        _micro_rate(micro),
        _verdict("RSS idle ≤ 60 MB", mem.idle_mb, 60, "MiB", idle_note),
        _streams_rss(mem, curves),
    ]


def render_targets(targets: list[Target]) -> str:
    rows = []
    for t in targets:
        verdict = "—" if t.ok is None else ("PASS" if t.ok else "MISS")
        rows.append([t.what, t.measured, verdict, t.note])
    return table(
        ["target (issue 19)", "measured", "PASS/MISS", "note"], rows, ["---", "--:", ":-:", "---"]
    )


def render_memory(mem: Memory) -> str:
    rows = [["main gateway, idle after warm-up", mem.idle_mb]]
    if mem.inflight:
        rows.append(
            [
                f"… with {mem.inflight:,} requests waiting on upstream headers "
                f"(mock:delay={INFLIGHT_DELAY:g}: connections and upstream requests in flight, "
                f"no client stream open yet; {mem.inflight_ok:,} completed)",
                mem.inflight_peak_mb,
            ]
        )
    rows += [
        ["… peak during the matrix (VmHWM)", mem.peak_matrix_mb],
        ["… idle after the matrix", mem.after_matrix_mb],
    ]
    held = mem.streams
    if held is not None:
        rows += [
            ["fresh gateway (open-streams probe), idle after warm-up", mem.streams_idle_mb],
            [
                f"… with {held.opened:,} open streams (of {held.requested:,} requested; each has "
                f"sent its first frames and waits on a mock dripping one event every "
                f"{DRIP_INTERVAL:g} s)",
                mem.streams_peak_mb,
            ],
            ["… 2 s after the clients closed them", mem.streams_after_mb],
        ]
    shown = [[str(what), f"{mb:.1f}"] for what, mb in rows]
    return table(["gateway memory (VmRSS of the process tree)", "MiB"], shown, ["---", "--:"])


def render_checks(checks: list[Check]) -> str:
    rows = []
    for c in checks:
        deltas = f"{c.direct_deltas} / {c.gateway_deltas}" if c.direct_deltas else "—"
        sc = SCENARIOS[c.scenario][0]
        rows.append([c.scenario, sc, f"{c.direct_bytes:,}", f"{c.gateway_bytes:,}", deltas])
    header = ["scenario", "what", "answer bytes direct", "answer bytes gw", "deltas direct / gw"]
    return table(header, rows, ["---", "---", "--:", "--:", "--:"])


def _interpreter() -> str:
    """Where the interpreter comes from: a PGO/LTO build ran this gateway ~5 % faster end to end
    and its translators 15-20 % faster here (2026-12-01)."""
    base = os.path.realpath(sys.base_prefix)
    if base == "/usr":
        return "the distribution's build"
    return f"built at {base}" if "pyenv" not in base else "pyenv's default build"


def machine_line(plan: Plan, cpu: CpuPlan, workers_note: str) -> str:
    uvloop = importlib.util.find_spec("uvloop") is not None
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick" if plan.quick else "full"
    return (
        f"**messages-gateway {__version__}** · {now} · nproc {os.cpu_count()} · "
        f"Python {platform.python_version()} ({_interpreter()}) · "
        f"uvloop {'on' if uvloop else 'off'} · "
        f"aiohttp {importlib.metadata.version('aiohttp')} · {platform.machine()} · mode {mode} "
        f"({plan.rounds}×{plan.measure:g} s measured per cell and target) · {cpu.note}"
        f"{workers_note}"
    )


def render_report(
    plan: Plan,
    cpu: CpuPlan,
    workers_note: str,
    checks: list[Check],
    cells: list[Cell],
    mem: Memory,
    micro: list[MicroRow],
    elapsed: float,
    chain: list[ChainRow] | None = None,
    accounts: list[FeatureRow] | None = None,
    curves: Curves | None = None,
) -> str:
    plain = [c for c in cells if not c.scenario.stream]
    streams = [c for c in cells if c.scenario.stream]
    parts = [
        "# messages-gateway benchmark",
        "",
        machine_line(plan, cpu, workers_note),
        "",
        "Command: `python -m tests.perf.bench" + (" --quick" if plan.quick else "") + "`. "
        "Direct = the same request, as the gateway translates it, sent straight to the mock "
        "upstream; gw = the Anthropic request through the gateway. Latencies in ms; "
        '"added" = gateway minus direct at the same percentile, from the same run.',
        "",
        "## Targets",
        "",
        render_targets(evaluate(cells, micro, mem, curves)),
        "",
        "## Non-streaming",
        "",
        render_cells(plain, PLAIN_COLUMNS, "req") if plain else "(not run)",
        "",
        "## Streaming (latency = whole stream)",
        "",
        render_cells(streams, STREAM_COLUMNS, "stream") if streams else "(not run)",
        "",
        "## Fallback chains (one gateway, the three routes alternating)",
        "",
        render_chain(chain) if chain else "(not run)",
        "",
        "## What each feature costs (a gateway with it vs a plain one, alternating)",
        "",
        render_features(accounts) if accounts else "(not run)",
        "",
        "## Cost against work (curves; plots beside this file)",
        "",
        render_curves(curves) if curves and (curves.body or curves.streams_rss) else "(not run)",
        "",
        "## Memory",
        "",
        render_memory(mem),
        "",
        "## Translators alone (micro-benchmarks)",
        "",
        render_micro(micro) if micro else "(skipped)",
        "",
        "## Scenarios as run",
        "",
        render_checks(checks),
        "",
    ]
    notes = list(mem.notes)
    for cell in cells:
        for side, w in (("direct", cell.direct), ("gateway", cell.gateway)):
            if w.errors:
                notes.append(
                    f"{cell.scenario.name} c={cell.concurrency} {side}: {w.errors} errors "
                    f"({'; '.join(w.error_samples)})."
                )
    if notes:
        parts += ["Notes: " + " ".join(notes), ""]
    parts.append(f"Run time {elapsed:.0f} s.")
    return "\n".join(parts) + "\n"
