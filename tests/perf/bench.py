"""``python -m tests.perf.bench [--quick] [--out FILE]``: the gateway's published benchmark.

One run starts the mock upstream and the gateway as separate processes (the gateway pinned to
a core of its own where the machine allows), then, for every scenario and concurrency, drives
the same traffic straight to the mock and through the gateway, alternating the two in short
rounds so that a noisy neighbour hits both alike. Every figure that is compared with a target
is a difference or a ratio from this one run. It then measures the gateway's memory (idle, and
with 1,000 open streams), runs the translator micro-benchmarks, and writes markdown tables
with a PASS/MISS column against the targets of issue 7.

See ``tests/perf/README.md`` for what each column means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import math
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp
import orjson

from gateway import __version__
from tests.perf.loadgen import (
    HeldStreams,
    Request,
    Window,
    burst,
    hold_streams,
    make_session,
    percentile,
    run_window,
)
from tests.perf.micro import MicroRow, run_micro
from tests.perf.micro import render as render_micro
from tests.perf.scenarios import (
    ANTHROPIC_HEADERS,
    SCENARIOS,
    Scenario,
    build_scenarios,
    prose,
    text_stream_body,
)

SIGNING_KEY: Final = "bench-signing-key-0123456789abcdef"
CLIENT_KEY: Final = "bench-client-key"
UPSTREAM_KEY: Final = "sk-bench"
HOST: Final = "127.0.0.1"
FULL_CONCURRENCY: Final = (1, 16, 64, 256)
QUICK_CONCURRENCY: Final = (1, 16)
READY_TIMEOUT: Final = 20.0
ROOT: Final = Path(__file__).resolve().parents[2]

# The drip mock holds streams open: every answer is one text of DRIP_WORDS words, one event
# every DRIP_INTERVAL seconds (~30 s a stream), so streams stay open while memory is sampled.
DRIP_WORDS: Final = 150
DRIP_INTERVAL: Final = 0.2
# mock:delay holds the response headers back this long (the in-flight memory probe).
INFLIGHT_DELAY: Final = 4.0


# ---------------------------------------------------------------------------------------------
# Run plan


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
            workers=args.workers,
        )


# ---------------------------------------------------------------------------------------------
# Processes: start, pin, readiness, CPU time and memory from /proc


CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``--workers`` children), from /proc."""
    out = [pid]
    i = 0
    while i < len(out):
        p = out[i]
        i += 1
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    out += [
                        int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()
                    ]
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def memory_kb(pid: int, key: str = "VmRSS") -> int:
    """``VmRSS`` (or ``VmHWM``) of ``pid`` and its descendants, in kB."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
                    break
    return total


def machine_busy() -> float:
    """CPU seconds every CPU of the machine spent busy (all processes, steal included)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


@dataclass(slots=True)
class Proc:
    """A server process the benchmark started (and stops)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    base: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss_mb(self) -> float:
        return memory_kb(self.pid) / 1024

    def hwm_mb(self) -> float:
        return memory_kb(self.pid, "VmHWM") / 1024

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGINT)  # aiohttp's run_app shuts down cleanly on it
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


def start_process(
    name: str,
    argv: list[str],
    *,
    port: int,
    env: dict[str, str],
    cpus: set[int] | None,
    log_dir: Path,
) -> Proc:
    log = log_dir / f"{name}.log"

    def pin() -> None:  # runs in the child between fork and exec
        if cpus:
            os.sched_setaffinity(0, cpus)

    with log.open("wb") as fh:
        popen = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=pin
        )
    return Proc(name, popen, log, f"http://{HOST}:{port}")


async def wait_ready(proc: Proc, within: float = READY_TIMEOUT) -> None:
    """Poll ``GET /healthz`` until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            if proc.popen.poll() is not None:
                raise RuntimeError(
                    f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(proc.base + "/healthz") as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} not ready after {within:g}s:\n{proc.log_tail()}")
            await asyncio.sleep(0.05)


def child_env(upstream_base: str) -> dict[str, str]:
    """The gateway's environment: ours, minus any GATEWAY_*/OPENAI_* the caller had set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))}
    env.update(
        OPENAI_BASE_URL=upstream_base,
        OPENAI_API_KEY=UPSTREAM_KEY,
        GATEWAY_LOG_LEVEL="warning",
        GATEWAY_SIGNING_KEY=SIGNING_KEY,
        GATEWAY_API_KEYS=CLIENT_KEY,
        PYTHONUNBUFFERED="1",
    )
    return env


def gateway_has_workers() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return "--workers" in out.stdout


@dataclass(frozen=True, slots=True)
class CpuPlan:
    """Which CPUs each side runs on (None = not pinned)."""

    gateway: set[int] | None
    others: set[int] | None
    note: str

    @classmethod
    def choose(cls, pin: bool, workers: int | None) -> CpuPlan:
        allowed = sorted(os.sched_getaffinity(0))
        if not pin:
            return cls(None, None, "no pinning (--no-pin)")
        if len(allowed) < 2:
            return cls(None, None, f"no pinning (only CPU {allowed} available)")
        if workers is not None and workers > 1:
            if len(allowed) <= workers:
                return cls(None, None, f"no pinning ({workers} workers on {len(allowed)} CPUs)")
            gw = set(allowed[-workers:])
            return cls(gw, set(allowed) - gw, f"gateway workers on CPUs {sorted(gw)}")
        gw = {allowed[-1]}
        others = set(allowed[:-1])
        return cls(
            gw,
            others,
            f"gateway on CPU {allowed[-1]}; mock and load generator on CPU "
            f"{','.join(map(str, sorted(others)))}",
        )


# ---------------------------------------------------------------------------------------------
# The servers under test


@dataclass(slots=True)
class Servers:
    mock: Proc
    gateway: Proc

    @property
    def mock_url(self) -> str:
        return self.mock.base + "/v1/responses"

    @property
    def gateway_url(self) -> str:
        return self.gateway.base + "/v1/messages"


def mock_command(port: int) -> list[str]:
    return [sys.executable, "-m", "gateway.mock_upstream", "--host", HOST, "--port", str(port)]


async def start_servers(
    cpu: CpuPlan,
    log_dir: Path,
    workers: int | None,
    mock_cmd: Callable[[int], list[str]] = mock_command,
    label: str = "",
) -> Servers:
    """Start the mock (``mock_cmd(port)``) and a gateway in front of it; wait for both."""
    mock_port, gw_port = free_port(), free_port()
    mock = start_process(
        "mock" + label,
        mock_cmd(mock_port),
        port=mock_port,
        env=child_env(""),
        cpus=cpu.others,
        log_dir=log_dir,
    )
    argv = [sys.executable, "-m", "gateway", "--host", HOST, "--port", str(gw_port)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    gateway = start_process(
        "gateway" + label,
        argv,
        port=gw_port,
        env=child_env(f"{mock.base}/v1"),
        cpus=cpu.gateway,
        log_dir=log_dir,
    )
    servers = Servers(mock, gateway)
    try:
        await wait_ready(mock)
        await wait_ready(gateway)
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers: Servers | None) -> None:
    if servers is not None:
        servers.gateway.stop()
        servers.mock.stop()


def gateway_headers() -> dict[str, str]:
    return {**ANTHROPIC_HEADERS, "x-api-key": CLIENT_KEY}


DIRECT_HEADERS: Final = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "authorization": f"Bearer {UPSTREAM_KEY}",
}


def requests_for(sc: Scenario, servers: Servers) -> tuple[Request, Request]:
    direct = Request(servers.mock_url, sc.responses, DIRECT_HEADERS, sc.stream)
    via = Request(servers.gateway_url, sc.anthropic, gateway_headers(), sc.stream)
    return direct, via


# ---------------------------------------------------------------------------------------------
# Validation: each scenario produces what it claims, both ways


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


# ---------------------------------------------------------------------------------------------
# The matrix


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


def progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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


# ---------------------------------------------------------------------------------------------
# Memory


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
            "from tests.perf.bench import serve_drip_mock; "
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


# ---------------------------------------------------------------------------------------------
# Profile (optional, py-spy)


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None) -> Iterator[None]:
    """Sample ``pid`` with py-spy (raw collapsed stacks) while the block runs."""
    if out is None:
        yield
        return
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        progress("--profile: py-spy not installed in this environment; skipped")
        yield
        return
    raw = out.with_suffix(".raw")
    spy = subprocess.Popen(
        [
            str(exe),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
    if raw.exists():
        out.write_text(summarise_profile(raw.read_text()))
        progress(f"profile summary in {out} (raw stacks in {raw})")


def summarise_profile(raw: str, top: int = 30) -> str:
    """Self and inclusive sample shares per function from py-spy's raw collapsed stacks."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in stack.split(";")]
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    lines = [f"py-spy samples: {total}", "", "self %  function"]
    lines += [f"{n / total * 100:5.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", "incl % function (gateway/ code)"]
    ours = [(f, n) for f, n in incl.most_common() if "gateway/" in f]
    lines += [f"{n / total * 100:5.1f}  {f}" for f, n in ours[:top]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Report


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


def _best_rate(cells: list[Cell], name: str, what: str, limit: float) -> Target:
    found = _find(cells, name)
    if not found:
        return Target(what, "not measured", None)
    best = max(found, key=lambda x: x.gateway.rate)
    g = best.gateway
    cpu = g.cpu.get("gateway", 0.0)
    per = cpu / g.finished if g.finished else math.nan
    note = (
        f"best at c={best.concurrency}, direct {best.direct.rate:,.0f}/s; gateway core "
        f"{cpu / g.seconds * 100:.0f}% busy, {per * 1e6:.0f} µs CPU each "
        f"(≈{1 / per:,.0f}/s at 100% of one core)"
    )
    return _verdict(what, g.rate, limit, "/s", note)


def _ttfb(cells: list[Cell]) -> Target:
    what = "added time to first byte, streams, c=1, p50 ≤ 1 ms"
    found = [
        (c.added(50, ttfb=True), c.scenario.name)
        for c in cells
        if c.scenario.stream and c.concurrency == 1
    ]
    if not found:
        return Target(what, "not measured", None)
    worst, name = max(found)
    each = ", ".join(f"{n} {v / 1e6:+.2f} ms" for v, n in found)
    return _verdict(what, worst / 1e6, 1.0, "ms", f"worst is {name}; {each}")


def _micro_rate(micro: list[MicroRow]) -> Target:
    what = "stream translation ≥ 200,000 upstream events/s on one core (micro, text deltas)"
    rows = {r.key: r for r in micro}
    main = rows.get("translate_text200")
    if main is None:
        return Target(what, "not measured", None)
    others = [rows[k] for k in ("translate_tool100", "decode_translate_text200") if k in rows]
    note = "; ".join(f"{r.what}: {r.value:,.0f}/s" for r in others)
    return _verdict(what, main.value, 200_000, "/s", note)


def _open_streams_target(mem: Memory) -> Target:
    held = mem.streams
    if held is None:
        return Target("RSS with 1,000 open streams ≤ 250 MB", "not measured", None)
    what = f"RSS with {held.requested:,} open streams ≤ 250 MB"
    note = (
        f"{held.opened:,} streams open at once (all opened within {held.open_seconds:.1f} s); "
        f"that gateway idle {mem.streams_idle_mb:.1f} MiB, "
        f"{mem.streams_after_mb:.1f} MiB after they closed"
    )
    if held.requested < 1000 or held.opened < held.requested:
        note += "; not the target's 1,000 open streams, so no verdict"
        return Target(what, f"{mem.streams_peak_mb:.1f} MiB", None, note)
    return _verdict(what, mem.streams_peak_mb, 250, "MiB", note)


def evaluate(cells: list[Cell], micro: list[MicroRow], mem: Memory) -> list[Target]:
    """Each target of issue 7 with its figure from this run."""
    idle_note = (
        f"after warm-up; {mem.after_matrix_mb:.1f} MiB after the whole matrix "
        f"(peak {mem.peak_matrix_mb:.1f} MiB during it)"
    )
    return [
        _added(cells, "small", 50, "added latency, small request, c=1, p50 ≤ 0.5 ms", 0.5),
        _added(cells, "small", 99, "added latency, small request, c=1, p99 ≤ 2 ms", 2.0),
        _added(
            cells, "cc150k", 50, "added latency, 150 KB Claude-Code request, c=1, p50 ≤ 2 ms", 2.0
        ),
        _best_rate(cells, "small", "small non-streaming requests/s, one process ≥ 2,000", 2000),
        _best_rate(cells, "text50", "whole 50-delta streams/s, one process ≥ 500", 500),
        _micro_rate(micro),
        _ttfb(cells),
        _verdict("RSS idle ≤ 80 MB", mem.idle_mb, 80, "MiB", idle_note),
        _open_streams_target(mem),
    ]


def render_targets(targets: list[Target]) -> str:
    rows = []
    for t in targets:
        verdict = "—" if t.ok is None else ("PASS" if t.ok else "MISS")
        rows.append([t.what, t.measured, verdict, t.note])
    return table(
        ["target (issue 7)", "measured", "PASS/MISS", "note"], rows, ["---", "--:", ":-:", "---"]
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


def machine_line(plan: Plan, cpu: CpuPlan, workers_note: str) -> str:
    uvloop = importlib.util.find_spec("uvloop") is not None
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick" if plan.quick else "full"
    return (
        f"**messages-gateway {__version__}** · {now} · nproc {os.cpu_count()} · "
        f"Python {platform.python_version()} · uvloop {'on' if uvloop else 'off'} · "
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
        render_targets(evaluate(cells, micro, mem)),
        "",
        "## Non-streaming",
        "",
        render_cells(plain, PLAIN_COLUMNS, "req") if plain else "(not run)",
        "",
        "## Streaming (latency = whole stream)",
        "",
        render_cells(streams, STREAM_COLUMNS, "stream") if streams else "(not run)",
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


# ---------------------------------------------------------------------------------------------
# Main


async def run(
    plan: Plan, cpu: CpuPlan, log_dir: Path, profile: Path | None
) -> tuple[list[Check], list[Cell], Memory]:
    mem = Memory()
    servers = await start_servers(cpu, log_dir, plan.workers)
    try:
        scenarios = build_scenarios(plan.scenarios, servers.mock.base + "/v1", SIGNING_KEY.encode())
        checks = await validate(scenarios, servers)
        progress("servers ready, scenarios validated; warming up")
        await warm_up(scenarios, servers, 0.5 if plan.quick else 2.0)
        await asyncio.sleep(0.5)
        mem.idle_mb = servers.gateway.rss_mb()
        if plan.inflight:
            progress(f"memory: {plan.inflight} requests waiting on upstream headers")
            await measure_inflight(servers, plan.inflight, mem)
        with py_spy(servers.gateway.pid, profile):
            cells = await run_matrix(plan, scenarios, servers)
        await asyncio.sleep(1.0)
        mem.after_matrix_mb = servers.gateway.rss_mb()
        mem.peak_matrix_mb = servers.gateway.hwm_mb()
    finally:
        stop_servers(servers)
    if plan.open_streams:
        progress(f"memory: {plan.open_streams} open streams through a fresh gateway")
        await measure_open_streams(cpu, log_dir, plan.workers, plan.open_streams, mem)
    return checks, cells, mem


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.perf.bench", description=__doc__.split("\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="reduced matrix for smoke tests (~20 s)")
    p.add_argument("--out", default="bench-results/latest.md", help="markdown report path")
    p.add_argument("--workers", type=int, help="pass --workers N to the gateway (if it has it)")
    p.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), help="subset of scenarios")
    p.add_argument("--concurrency", nargs="+", type=int, help="concurrency levels")
    p.add_argument("--duration", type=float, help="measured seconds per round and target")
    p.add_argument(
        "--open-streams", type=int, help="streams held open for the memory probe (0 = skip)"
    )
    p.add_argument("--skip-micro", action="store_true", help="skip the translator micro-benchmarks")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument(
        "--profile", type=Path, help="py-spy the gateway during the matrix; summary here"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    workers = args.workers
    workers_note = ""
    if workers is not None:
        if gateway_has_workers():
            workers_note = f" · gateway --workers {workers}"
        else:
            progress(f"--workers {workers} ignored: the gateway has no --workers flag yet")
            workers_note = f" · --workers {workers} requested but unsupported by the gateway"
            workers = None
    plan = Plan.from_args(argparse.Namespace(**{**vars(args), "workers": workers}))
    cpu = CpuPlan.choose(not args.no_pin, workers)
    raise_fd_limit()
    if cpu.others:
        os.sched_setaffinity(0, cpu.others)  # the load generator stays off the gateway's core
    progress(f"{'quick' if plan.quick else 'full'} run; {cpu.note}")
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        checks, cells, mem = asyncio.run(run(plan, cpu, Path(tmp), args.profile))
    micro: list[MicroRow] = []
    if plan.micro:
        if cpu.gateway:
            os.sched_setaffinity(0, cpu.gateway)  # "on one core": the one the gateway had
        progress("micro-benchmarks")
        micro = run_micro(plan.quick)
    report = render_report(
        plan, cpu, workers_note, checks, cells, mem, micro, time.perf_counter() - t0
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    print(report)
    progress(f"written to {out}")


if __name__ == "__main__":
    main()
