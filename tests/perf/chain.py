"""The fallback chain's cost when its first target is healthy (issue 16): one gateway process
with two routes to the same mock, a single-target route and a three-target chain, driven
alternately with the same traffic so a noisy neighbour hits both alike. The chain must be
within noise of the single target: only a breaker check and a limiter lookup are added."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson

from tests.perf.loadgen import Request, Window, make_session, percentile, run_window
from tests.perf.matrix import Plan
from tests.perf.scenarios import Scenario
from tests.perf.servers import (
    HOST,
    CpuPlan,
    child_env,
    free_port,
    gateway_headers,
    start_process,
    wait_ready,
)

CHAIN_MODEL: Final = "bench-chain"
CHAIN_SCENARIOS: Final = ("small", "text50")
CHAIN_CONCURRENCY: Final = 16
CONFIG: Final = """
[upstreams.spare]
base_url = "{mock}/v1"

[[routes]]
match = ["{chain}"]
model = "gpt-5"
fallbacks = [{{upstream = "spare", model = "gpt-5-b"}}, {{upstream = "spare", model = "gpt-5-c"}}]

[[routes]]
match = ["*"]
model = "gpt-5"
"""


@dataclass(slots=True)
class ChainRow:
    scenario: str
    concurrency: int
    single: Window = field(default_factory=Window)
    chain: Window = field(default_factory=Window)


async def measure_chain(
    plan: Plan, cpu: CpuPlan, log_dir: Path, scenarios: list[Scenario], mock_base: str
) -> list[ChainRow]:
    config = log_dir / "chain.toml"
    config.write_text(CONFIG.format(mock=mock_base, chain=CHAIN_MODEL))
    port = free_port()
    env = {**child_env(f"{mock_base}/v1"), "GATEWAY_CONFIG": str(config)}
    argv = [sys.executable, "-m", "gateway", "--host", HOST, "--port", str(port)]
    proc = start_process("gateway-chain", argv, port=port, env=env, cpus=cpu.gateway,
                         log_dir=log_dir)  # fmt: skip
    rows: list[ChainRow] = []
    try:
        await wait_ready(proc)
        url = f"{proc.base}/v1/messages"
        c = CHAIN_CONCURRENCY
        for sc in scenarios:
            if sc.name not in CHAIN_SCENARIOS:
                continue
            doc = orjson.loads(sc.anthropic)
            single = Request(url, sc.anthropic, gateway_headers(), sc.stream)
            chained = Request(url, orjson.dumps({**doc, "model": CHAIN_MODEL}),
                              gateway_headers(), sc.stream)  # fmt: skip
            row = ChainRow(sc.name, c)
            async with make_session(c) as s_single, make_session(c) as s_chain:
                for r in range(max(plan.rounds, 2)):
                    warm = plan.first_warmup if r == 0 else plan.warmup
                    row.single.merge(await run_window(s_single, single, c, warm, plan.measure))
                    row.chain.merge(await run_window(s_chain, chained, c, warm, plan.measure))
            rows.append(row)
    finally:
        proc.stop()
    return rows


def render_chain(rows: list[ChainRow]) -> str:
    lines = [
        "| scenario | c | single target /s | 3-target chain /s | chain ÷ single | p50 single ms "
        "| p50 chain ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r.chain.rate / r.single.rate if r.single.rate else float("nan")
        p50s = percentile(r.single.latency_ns, 50) / 1e6
        p50c = percentile(r.chain.latency_ns, 50) / 1e6
        lines.append(
            f"| {r.scenario} | {r.concurrency} | {r.single.rate:.0f} | {r.chain.rate:.0f} | "
            f"{ratio:.3f} | {p50s:.2f} | {p50c:.2f} | {r.single.errors + r.chain.errors} |"
        )
    return "\n".join(lines)
