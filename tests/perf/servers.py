"""The benchmark's processes: start the mock and the gateway, pin them to CPUs, wait until they
answer, read their CPU time and memory from /proc, and stop them; plus the requests each side
takes and the progress line on stderr."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp

from tests.perf.loadgen import Request
from tests.perf.scenarios import ANTHROPIC_HEADERS, Scenario

SIGNING_KEY: Final = "bench-signing-key-0123456789abcdef"
CLIENT_KEY: Final = "bench-client-key"
UPSTREAM_KEY: Final = "sk-bench"
HOST: Final = "127.0.0.1"
READY_TIMEOUT: Final = 20.0
ROOT: Final = Path(__file__).resolve().parents[2]
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


def progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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
    cwd: Path = ROOT,
) -> Proc:
    log = log_dir / f"{name}.log"

    def pin() -> None:  # runs in the child between fork and exec
        if cpus:
            os.sched_setaffinity(0, cpus)

    with log.open("wb") as fh:
        popen = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=pin
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
