"""``python -m tests.perf.bench [--quick] [--out FILE]``: the gateway's published benchmark.

One run starts the mock upstream and the gateway as separate processes (the gateway pinned to
a core of its own where the machine allows), then, for every scenario and concurrency, drives
the same traffic straight to the mock and through the gateway, alternating the two in short
rounds so that a noisy neighbour hits both alike. Every figure that is compared with a target
is a difference or a ratio from this one run. It then measures the gateway's memory (idle, and
with 1,000 open streams), runs the translator micro-benchmarks, and writes markdown tables
with a PASS/MISS column against the targets of issue 19.

This module is the command line and the order of a run; the parts live beside it:
``servers.py`` (processes, pinning, readiness), ``matrix.py`` (plan, validation, the matrix),
``memory.py`` (RSS probes), ``profiling.py`` (``--profile``), ``report.py`` (the tables).
See ``tests/perf/README.md`` for what each column means.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path

from tests.perf.chain import CHAIN_SCENARIOS, ChainRow, measure_chain
from tests.perf.curves import Curves, measure_curves, measure_stream_memory, plot_curves
from tests.perf.features import FEATURE_SCENARIOS, FeatureRow, measure_features
from tests.perf.matrix import Cell, Check, Plan, run_matrix, validate, warm_up
from tests.perf.memory import Memory, measure_inflight, measure_open_streams
from tests.perf.micro import MicroRow, run_micro
from tests.perf.profiling import py_spy
from tests.perf.report import render_report
from tests.perf.scenarios import SCENARIOS, build_scenarios
from tests.perf.servers import (
    SIGNING_KEY,
    CpuPlan,
    gateway_has_workers,
    progress,
    start_servers,
    stop_servers,
)


async def run(
    plan: Plan, cpu: CpuPlan, log_dir: Path, profile: Path | None
) -> tuple[list[Check], list[Cell], Memory, list[ChainRow], list[FeatureRow], Curves]:
    mem = Memory()
    chain: list[ChainRow] = []
    accounts: list[FeatureRow] = []
    curves = Curves()
    # every gateway started here keeps its state (signing key, usage ledger) in the run's dir
    os.environ["XDG_STATE_HOME"] = str(log_dir)
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
        if any(sc.name in CHAIN_SCENARIOS for sc in scenarios):
            progress("fallback chain: single target vs a three-target chain, first healthy")
            chain = await measure_chain(plan, cpu, log_dir, scenarios, servers.mock.base)
        if any(sc.name in FEATURE_SCENARIOS for sc in scenarios):
            progress("features: a gateway per feature vs a plain one")
            accounts = await measure_features(plan, cpu, log_dir, scenarios, servers.mock.base)
        if plan.curves:
            progress("curves: cost against body size and stream length")
            curves = await measure_curves(plan, servers)
    finally:
        stop_servers(servers)
    if plan.open_streams:
        progress(f"memory: {plan.open_streams} open streams through a fresh gateway")
        await measure_open_streams(cpu, log_dir, plan.workers, plan.open_streams, mem)
    if plan.curves and plan.open_streams:
        progress("curves: memory against open streams")
        await measure_stream_memory(plan, cpu, log_dir, curves)
    return checks, cells, mem, chain, accounts, curves


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
    p.add_argument("--skip-curves", action="store_true", help="skip the cost-against-work curves")
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
        checks, cells, mem, chain, accounts, curves = asyncio.run(
            run(plan, cpu, Path(tmp), args.profile)
        )
    micro: list[MicroRow] = []
    if plan.micro:
        if cpu.gateway:
            os.sched_setaffinity(0, cpu.gateway)  # "on one core": the one the gateway had
        progress("micro-benchmarks")
        micro = run_micro(plan.quick)
    report = render_report(
        plan,
        cpu,
        workers_note,
        checks,
        cells,
        mem,
        micro,
        time.perf_counter() - t0,
        chain,
        accounts,
        curves,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    for png in plot_curves(curves, out.parent):
        progress(f"plot written to {png}")
    print(report)
    progress(f"written to {out}")


if __name__ == "__main__":
    main()
