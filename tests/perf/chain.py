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

from tests.perf.loadgen import Request, Window, percentile
from tests.perf.matrix import Plan, alternate
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
#: a chain whose first target is down, its circuit opened by the warm-up and kept open
OPEN_MODEL: Final = "bench-open"
CHAIN_SCENARIOS: Final = ("small", "text50")
CHAIN_CONCURRENCY: Final = 16
CONFIG: Final = """
[upstreams.spare]
base_url = "{mock}/v1"

[upstreams.down]
base_url = "http://127.0.0.1:{dead}/v1"

[fallback]
breaker_cooldown = 3600

[[routes]]
match = ["{open}"]
model = "gpt-5"
upstream = "down"
fallbacks = [{{upstream = "default", model = "gpt-5"}}]

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
    #: the chain whose first target's circuit is open: what skipping it costs
    open: Window = field(default_factory=Window)


async def measure_chain(
    plan: Plan, cpu: CpuPlan, log_dir: Path, scenarios: list[Scenario], mock_base: str
) -> list[ChainRow]:
    config = log_dir / "chain.toml"
    config.write_text(
        CONFIG.format(mock=mock_base, chain=CHAIN_MODEL, open=OPEN_MODEL, dead=free_port())
    )
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
            chained, skipping = (
                Request(url, orjson.dumps({**doc, "model": m}), gateway_headers(), sc.stream)
                for m in (CHAIN_MODEL, OPEN_MODEL)
            )
            one, three, opened = await alternate([single, chained, skipping], c, plan)
            rows.append(ChainRow(sc.name, c, one, three, opened))
    finally:
        proc.stop()
    return rows


def render_chain(rows: list[ChainRow]) -> str:
    lines = [
        "| scenario | c | single target /s | 3-target chain /s | chain ÷ single | first circuit "
        "open /s | open ÷ single | p50 single ms | p50 chain ms | p50 open ms | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        base = r.single.rate or float("nan")
        p50 = [percentile(w.latency_ns, 50) / 1e6 for w in (r.single, r.chain, r.open)]
        errors = r.single.errors + r.chain.errors + r.open.errors
        lines.append(
            f"| {r.scenario} | {r.concurrency} | {r.single.rate:.0f} | {r.chain.rate:.0f} | "
            f"{r.chain.rate / base:.3f} | {r.open.rate:.0f} | {r.open.rate / base:.3f} | "
            f"{p50[0]:.2f} | {p50[1]:.2f} | {p50[2]:.2f} | {errors} |"
        )
    return "\n".join(lines)
