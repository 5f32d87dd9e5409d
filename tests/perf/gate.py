"""``python -m tests.perf.gate``: the performance regression gate (issue 19 item 3), about a
minute.

The gateway and the mock run as in ``make bench`` (the gateway pinned to a core of its own);
for each gated scenario, requests straight to the mock and through the gateway alternate in
short rounds, and each round gives one ratio (gateway req/s ÷ direct req/s): on a noisy shared
machine a ratio from one round is steadier than any absolute figure. The median ratio of the
rounds is compared with the committed baseline (``gate-baseline.json``); the gate fails when it
is more than ``margin`` below it. ``--update`` writes the medians measured as the new baseline
(commit it with the change that moved them, and say why).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from tests.perf.loadgen import make_session, run_window
from tests.perf.scenarios import build_scenarios
from tests.perf.servers import (
    SIGNING_KEY,
    CpuPlan,
    progress,
    requests_for,
    start_servers,
    stop_servers,
)

BASELINE: Final = Path(__file__).with_name("gate-baseline.json")
#: scenario → concurrency: small non-streamed requests, 50-delta streams as the mock drips them
#: (bound by the mock: a guard on the relay) and written at once (bound by the gateway), at c=16
GATED: Final = {"small": 16, "text50": 16, "text50burst": 16}
ROUNDS: Final = 5
WARM: Final = 0.2
MEASURE: Final = 1.0


async def measure(rounds: int) -> dict[str, dict[str, Any]]:
    cpu = CpuPlan.choose(True, None)
    if cpu.others:
        os.sched_setaffinity(0, cpu.others)
    progress(f"gate: {cpu.note}")
    with tempfile.TemporaryDirectory(prefix="gateway-gate-") as tmp:
        os.environ["XDG_STATE_HOME"] = tmp
        servers = await start_servers(cpu, Path(tmp), None)
        try:
            scenarios = build_scenarios(list(GATED), servers.mock.base + "/v1",
                                        SIGNING_KEY.encode())  # fmt: skip
            out: dict[str, dict[str, Any]] = {}
            for sc in scenarios:
                c = GATED[sc.name]
                direct, via = requests_for(sc, servers)
                ratios: list[float] = []
                errors = 0
                async with make_session(c) as s_direct, make_session(c) as s_gateway:
                    await run_window(s_direct, direct, c, 0.5, 0.0)  # connections open, warm
                    await run_window(s_gateway, via, c, 0.5, 0.0)
                    for _ in range(rounds):
                        d = await run_window(s_direct, direct, c, WARM, MEASURE)
                        g = await run_window(s_gateway, via, c, WARM, MEASURE)
                        errors += d.errors + g.errors
                        if d.rate:
                            ratios.append(g.rate / d.rate)
                out[sc.name] = {"concurrency": c, "ratios": [round(r, 3) for r in ratios],
                                "median": round(statistics.median(ratios), 3) if ratios else 0.0,
                                "errors": errors}  # fmt: skip
                progress(f"gate: {sc.name} c={c} ratios {out[sc.name]['ratios']}")
            return out
        finally:
            stop_servers(servers)


def verdict(measured: dict[str, dict[str, Any]], baseline: dict[str, Any]) -> list[str]:
    """The regressions (empty: the gate passes)."""
    margin = float(baseline["margin"])
    bad = []
    for name, m in measured.items():
        floor = float(baseline["ratios"][name]) * (1 - margin)
        if m["errors"]:
            bad.append(f"{name}: {m['errors']} failed requests")
        if m["median"] < floor:
            bad.append(f"{name}: median ratio {m['median']:.3f} < {floor:.3f} (baseline "
                       f"{baseline['ratios'][name]:.3f} - {margin:.0%})")  # fmt: skip
    return bad


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.perf.gate", description=__doc__)
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--update", action="store_true", help="write the medians as the baseline")
    args = p.parse_args(argv)
    measured = asyncio.run(measure(args.rounds))
    baseline = json.loads(BASELINE.read_text())
    print("| scenario | c | ratio gateway/direct per round | median | baseline | floor |")
    print("|---|--:|---|--:|--:|--:|")
    for name, m in measured.items():
        base = float(baseline["ratios"][name])
        floor = base * (1 - float(baseline["margin"]))
        print(f"| {name} | {m['concurrency']} | {' '.join(f'{r:.3f}' for r in m['ratios'])} | "
              f"{m['median']:.3f} | {base:.3f} | {floor:.3f} |")  # fmt: skip
    if args.update:
        baseline["ratios"] = {n: m["median"] for n, m in measured.items()}
        BASELINE.write_text(json.dumps(baseline, indent=2) + "\n")
        print(f"baseline written to {BASELINE}", file=sys.stderr)
        return
    bad = verdict(measured, baseline)
    for line in bad:
        print(f"gate: REGRESSION {line}", file=sys.stderr)
    print("gate: PASS" if not bad else "gate: FAIL", file=sys.stderr)
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
