"""``python -m tests.perf.compare --before REV``: before/after and the floor, in one run.

Four targets take turns on the same mock, round after round, so a noisy neighbour lands on all
of them alike: the mock **direct**; the **floor** (``floor_proxy.py``, a bare aiohttp proxy on
the same stack, sent the upstream's own bytes: what two HTTP hops through aiohttp cost);
the gateway at git revision ``REV`` (**before**, from a temporary ``git worktree``); and the
gateway of this checkout (**after**). The three proxies run one at a time on the gateway's core,
in reverse order every other round; each gateway has its own state directory (usage ledger).
For each scenario and concurrency: the median over the rounds of requests/s, of added p50
latency (or, for streams, added TTFB) and of CPU µs per request. Without ``--before`` the
"before" columns are left out. About 4 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tests.perf.loadgen import Request, Window, make_session, percentile, run_window
from tests.perf.report import table
from tests.perf.scenarios import SCENARIOS, build_scenarios
from tests.perf.servers import (
    DIRECT_HEADERS,
    ROOT,
    SIGNING_KEY,
    CpuPlan,
    Proc,
    child_env,
    free_port,
    progress,
    requests_for,
    start_process,
    start_servers,
    stop_servers,
    wait_ready,
)

WARM: Final = 0.2
MEASURE: Final = 1.0


@dataclass(slots=True)
class Series:
    """One target's rounds in one cell."""

    rate: list[float] = field(default_factory=list)
    added_ms: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    def median(self, values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A detached checkout of ``rev`` in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="gateway-before-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(path), rev], cwd=ROOT, check=True
        )
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False
            )


def _p50(w: Window, stream: bool) -> float:
    return percentile(w.ttfb_ns if stream else w.latency_ns, 50) / 1e6


async def measure(args: argparse.Namespace, tree: Path | None, log_dir: Path) -> str:
    cpu = CpuPlan.choose(True, None)
    if cpu.others:
        os.sched_setaffinity(0, cpu.others)
    progress(f"compare: {cpu.note}")
    servers = await start_servers(cpu, log_dir, None)
    procs: list[Proc] = []
    try:
        port = free_port()
        floor = start_process(
            "floor",
            [sys.executable, "-m", "tests.perf.floor_proxy", str(port), servers.mock_url],
            port=port,
            env=child_env(""),
            cpus=cpu.gateway,
            log_dir=log_dir,
        )
        procs.append(floor)
        before: Proc | None = None
        if tree is not None:
            port = free_port()
            # Its own state directory: two gateways on one usage ledger (one SQLite file)
            # would wait on each other's write locks, the one started second more.
            state = log_dir / "before-state"
            state.mkdir(exist_ok=True)
            before = start_process(
                "before",
                [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port)],
                port=port,
                env={**child_env(f"{servers.mock.base}/v1"), "XDG_STATE_HOME": str(state)},
                cpus=cpu.gateway,
                log_dir=log_dir,
                cwd=tree,
            )
            procs.append(before)
        for proc in procs:
            await wait_ready(proc)
        names = ["direct", "floor", *(["before"] if before else []), "after"]
        header = ["scenario", "c", "direct /s"]
        for name in names[1:]:
            header += [f"{name} /s", f"{name} added ms", f"{name} CPU µs"]
        rows: list[list[str]] = []
        scenarios = build_scenarios(args.scenarios, servers.mock.base + "/v1", SIGNING_KEY.encode())
        for sc in scenarios:
            direct, after = requests_for(sc, servers)
            targets: dict[str, tuple[Request, Proc | None]] = {
                "direct": (direct, None),
                "floor": (
                    Request(floor.base + "/v1/messages", sc.responses, DIRECT_HEADERS, sc.stream),
                    floor,
                ),
                "after": (after, servers.gateway),
            }
            if before is not None:
                targets["before"] = (
                    Request(before.base + "/v1/messages", after.body, after.headers, sc.stream),
                    before,
                )
            for c in args.concurrency:
                series = {name: Series() for name in names}
                sessions = {name: make_session(c) for name in names}
                try:
                    for name in names:
                        await run_window(sessions[name], targets[name][0], c, 0.5, 0.0)
                    proxies = names[1:]
                    for rnd in range(args.rounds):
                        p50_direct = 0.0
                        # The proxies take turns on one core; every other round runs them in
                        # reverse, so none is always the one measured right after another.
                        order = proxies if rnd % 2 == 0 else proxies[::-1]
                        for name in ["direct", *order]:
                            req, probe = targets[name]
                            probes = {"p": probe.cpu} if probe is not None else None
                            w = await run_window(sessions[name], req, c, WARM, MEASURE, probes)
                            s = series[name]
                            s.rate.append(w.rate)
                            if name == "direct":
                                p50_direct = _p50(w, sc.stream)
                            else:
                                s.added_ms.append(_p50(w, sc.stream) - p50_direct)
                                s.cpu_us.append(w.cpu.get("p", 0.0) / max(1, w.finished) * 1e6)
                finally:
                    for session in sessions.values():
                        await session.close()
                d = series["direct"]
                row = [sc.name, str(c), f"{d.median(d.rate):,.0f}"]
                for name in names[1:]:
                    s = series[name]
                    row += [
                        f"{s.median(s.rate):,.0f}",
                        f"{s.median(s.added_ms):+.3f}",
                        f"{s.median(s.cpu_us):.0f}",
                    ]
                rows.append(row)
                progress("compare: " + " | ".join(row))
        return table(header, rows, ["---"] + ["--:"] * (len(header) - 1))
    finally:
        for proc in procs:
            proc.stop()
        stop_servers(servers)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.perf.compare", description=__doc__)
    p.add_argument("--before", help="git revision to compare with (e.g. a tag or a commit)")
    p.add_argument(
        "--scenarios",
        nargs="+",
        choices=list(SCENARIOS),
        default=["small", "cc150k", "text50", "text50burst"],
    )
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 16])
    p.add_argument("--rounds", type=int, default=6, help="an even number: each order as often")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gateway-compare-") as tmp:
        os.environ["XDG_STATE_HOME"] = tmp
        with contextlib.ExitStack() as stack:
            tree = stack.enter_context(worktree(args.before)) if args.before else None
            out = asyncio.run(measure(args, tree, Path(tmp)))
    note = (
        "added ms: p50 latency minus direct's (streams: time to first byte); CPU µs: the "
        "proxy's CPU per request; medians of the rounds"
    )
    text = f"{out}\n\n{note}\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
