"""What named keys, their limits and the usage ledger cost per request (issue 17): two gateway
processes on the gateway's core, one plain (an anonymous key, no ledger) and one with a named
key carrying every limit and budget and the SQLite ledger on, driven alternately with the
same traffic. Targets: within 0.05 ms added p50 at c=1, and no more than 5 % fewer requests a
second at c=16."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from gateway.accounts.keyfile import KeyEntry, KeyFile, Limits, hash_key, save
from tests.perf.loadgen import Request, Window, make_session, percentile, run_window
from tests.perf.matrix import Plan
from tests.perf.scenarios import ANTHROPIC_HEADERS, Scenario
from tests.perf.servers import HOST, CpuPlan, Proc, child_env, free_port, start_process, wait_ready

NAMED_KEY: Final = "sk-gw-bench-named-key-0123456789"
ANON_KEY: Final = "sk-bench-anonymous"
ACCOUNT_SCENARIOS: Final = ("small", "text50")
ACCOUNT_CONCURRENCY: Final = (1, 16)
#: limits far above what the benchmark sends: every check runs, none refuses
LIMITS: Final = Limits(rpm=10**9, tpm=10**12, concurrent=10**6, daily_tokens=10**15,
                       monthly_tokens=10**15, daily_cost=10**9, monthly_cost=10**9)  # fmt: skip


@dataclass(slots=True)
class AccountRow:
    scenario: str
    concurrency: int
    plain: Window = field(default_factory=Window)
    accounts: Window = field(default_factory=Window)


async def _gateway(name: str, config: str, key_env: dict[str, str], mock_base: str,
                   cpu: CpuPlan, log_dir: Path) -> Proc:  # fmt: skip
    path = log_dir / f"{name}.toml"
    path.write_text(config)
    port = free_port()
    env = {**child_env(f"{mock_base}/v1"), "GATEWAY_CONFIG": str(path), **key_env}
    env.pop("GATEWAY_API_KEYS", None)
    env.update(key_env)
    argv = [sys.executable, "-m", "gateway", "--host", HOST, "--port", str(port)]
    proc = start_process(name, argv, port=port, env=env, cpus=cpu.gateway, log_dir=log_dir)
    await wait_ready(proc)
    return proc


async def measure_accounts(
    plan: Plan, cpu: CpuPlan, log_dir: Path, scenarios: list[Scenario], mock_base: str
) -> list[AccountRow]:
    keys = log_dir / "keys.json"
    save(keys, KeyFile(keys=[KeyEntry(name="bench", hash=hash_key(NAMED_KEY), limits=LIMITS)]))
    plain_cfg = "[ledger]\nenabled = false\n"
    acct_cfg = (f'[accounts]\nkeys_file = "{keys}"\n[ledger]\npath = "{log_dir / "usage.db"}"\n'
                '[prices]\n"gpt-5" = { input = 1.25, output = 10.0 }\n')  # fmt: skip
    plain = await _gateway("gateway-plain", plain_cfg, {"GATEWAY_API_KEYS": ANON_KEY},
                           mock_base, cpu, log_dir)  # fmt: skip
    rows: list[AccountRow] = []
    try:
        named = await _gateway("gateway-accounts", acct_cfg, {}, mock_base, cpu, log_dir)
        try:
            for sc in scenarios:
                if sc.name not in ACCOUNT_SCENARIOS:
                    continue
                p_req, a_req = (
                    Request(f"{proc.base}/v1/messages", sc.anthropic,
                            {**ANTHROPIC_HEADERS, "x-api-key": key}, sc.stream)
                    for proc, key in ((plain, ANON_KEY), (named, NAMED_KEY))
                )  # fmt: skip
                for c in ACCOUNT_CONCURRENCY:
                    if sc.stream and c == 1:
                        continue
                    row = AccountRow(sc.name, c)
                    async with make_session(c) as s_plain, make_session(c) as s_acct:
                        for r in range(max(plan.rounds, 2)):
                            warm = plan.first_warmup if r == 0 else plan.warmup
                            m = plan.measure
                            row.plain.merge(await run_window(s_plain, p_req, c, warm, m))
                            row.accounts.merge(await run_window(s_acct, a_req, c, warm, m))
                    rows.append(row)
        finally:
            named.stop()
    finally:
        plain.stop()
    return rows


def render_accounts(rows: list[AccountRow]) -> str:
    lines = [
        "| scenario | c | plain /s | named key + limits + ledger /s | ratio | p50 plain ms "
        "| p50 accounts ms | added p50 ms | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        ratio = r.accounts.rate / r.plain.rate if r.plain.rate else float("nan")
        p50p = percentile(r.plain.latency_ns, 50) / 1e6
        p50a = percentile(r.accounts.latency_ns, 50) / 1e6
        lines.append(
            f"| {r.scenario} | {r.concurrency} | {r.plain.rate:.0f} | {r.accounts.rate:.0f} | "
            f"{ratio:.3f} | {p50p:.3f} | {p50a:.3f} | {p50a - p50p:+.3f} | "
            f"{r.plain.errors + r.accounts.errors} |"
        )
    return "\n".join(lines)
