"""What each feature costs per request (issue 19 item 4): a plain gateway (an anonymous key,
no ledger) and, beside it on the gateway's core, one gateway per feature, each driven
alternately with the plain one with the same traffic. Rows: a named key with every limit and
budget; the usage ledger (SQLite); tracing on (every request sampled, OTLP to the mock's sink);
Claude Code's auto-mode check with the check turned off; all of them together. The fallback
chain has its own table (``chain.py``). Targets (issue 17): the named key + limits + ledger
within 0.05 ms added p50 at c=1 and within 5 % of the requests a second at c=16."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from gateway.accounts.keyfile import KeyEntry, KeyFile, Limits, hash_key, save
from tests.perf.loadgen import Request, Window, percentile
from tests.perf.matrix import Plan, alternate
from tests.perf.scenarios import ANTHROPIC_HEADERS, Scenario
from tests.perf.servers import HOST, CpuPlan, Proc, child_env, free_port, start_process, wait_ready

NAMED_KEY: Final = "sk-gw-bench-named-key-0123456789"
ANON_KEY: Final = "sk-bench-anonymous"
FEATURE_SCENARIOS: Final = ("small",)
FEATURE_CONCURRENCY: Final = (1, 16)
#: limits far above what the benchmark sends: every check runs, none refuses
LIMITS: Final = Limits(rpm=10**9, tpm=10**12, concurrent=10**6, daily_tokens=10**15,
                       monthly_tokens=10**15, daily_cost=10**9, monthly_cost=10**9)  # fmt: skip
PLAIN: Final = "[ledger]\nenabled = false\n"


def _safeguarded(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "safeguards": [{"type": "dangerous_tool_use"}]}


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    #: the gateway's TOML ({dir} and {mock} are filled in)
    config: str
    key: str = ANON_KEY
    body: Callable[[dict[str, Any]], dict[str, Any]] | None = None


FEATURES: Final = (
    Feature("named key + limits + budgets",
            '[accounts]\nkeys_file = "{dir}/keys.json"\n' + PLAIN, NAMED_KEY),
    Feature("usage ledger (SQLite)", '[ledger]\npath = "{dir}/usage.db"\n'),
    Feature("tracing on (all sampled, OTLP)",
            '[tracing]\nenabled = true\nendpoint = "{mock}/v1/traces"\n' + PLAIN),
    Feature("auto-mode check, turned off",
            "[safeguards]\nenabled = false\n" + PLAIN, body=_safeguarded),
    Feature("all of the above",
            '[accounts]\nkeys_file = "{dir}/keys.json"\n[ledger]\npath = "{dir}/all.db"\n'
            '[tracing]\nenabled = true\nendpoint = "{mock}/v1/traces"\n'
            "[safeguards]\nenabled = false\n", NAMED_KEY, _safeguarded),
)  # fmt: skip


@dataclass(slots=True)
class FeatureRow:
    feature: str
    scenario: str
    concurrency: int
    plain: Window = field(default_factory=Window)
    featured: Window = field(default_factory=Window)


async def _gateway(name: str, config: str, mock_base: str, cpu: CpuPlan, log_dir: Path) -> Proc:
    path = log_dir / f"{name}.toml"
    path.write_text(config.format(dir=log_dir, mock=mock_base))
    port = free_port()
    env = {**child_env(f"{mock_base}/v1"), "GATEWAY_CONFIG": str(path),
           "GATEWAY_API_KEYS": ANON_KEY}  # fmt: skip
    argv = [sys.executable, "-m", "gateway", "--host", HOST, "--port", str(port)]
    proc = start_process(name, argv, port=port, env=env, cpus=cpu.gateway, log_dir=log_dir)
    await wait_ready(proc)
    return proc


def _request(proc: Proc, sc: Scenario, key: str, feature: Feature | None) -> Request:
    body = sc.anthropic
    if feature is not None and feature.body is not None:
        body = orjson.dumps(feature.body(orjson.loads(body)))
    return Request(f"{proc.base}/v1/messages", body, {**ANTHROPIC_HEADERS, "x-api-key": key},
                   sc.stream)  # fmt: skip


async def measure_features(
    plan: Plan, cpu: CpuPlan, log_dir: Path, scenarios: list[Scenario], mock_base: str
) -> list[FeatureRow]:
    bench = KeyEntry(name="bench", hash=hash_key(NAMED_KEY), limits=LIMITS)
    save(log_dir / "keys.json", KeyFile(keys=[bench]))
    plain = await _gateway("gateway-plain", PLAIN, mock_base, cpu, log_dir)
    rows: list[FeatureRow] = []
    try:
        for i, feature in enumerate(FEATURES):
            proc = await _gateway(f"gateway-feature-{i}", feature.config, mock_base, cpu, log_dir)
            try:
                for sc in scenarios:
                    if sc.name not in FEATURE_SCENARIOS:
                        continue
                    p_req = _request(plain, sc, ANON_KEY, None)
                    f_req = _request(proc, sc, feature.key, feature)
                    for c in FEATURE_CONCURRENCY:
                        without, with_it = await alternate([p_req, f_req], c, plan)
                        rows.append(FeatureRow(feature.name, sc.name, c, without, with_it))
            finally:
                proc.stop()
    finally:
        plain.stop()
    return rows


def render_features(rows: list[FeatureRow]) -> str:
    lines = [
        "| feature | scenario | c | plain /s | with it /s | ratio | p50 plain ms "
        "| p50 with it ms | added p50 ms | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        ratio = r.featured.rate / r.plain.rate if r.plain.rate else float("nan")
        p50p = percentile(r.plain.latency_ns, 50) / 1e6
        p50f = percentile(r.featured.latency_ns, 50) / 1e6
        lines.append(
            f"| {r.feature} | {r.scenario} | {r.concurrency} | {r.plain.rate:.0f} | "
            f"{r.featured.rate:.0f} | {ratio:.3f} | {p50p:.3f} | {p50f:.3f} | "
            f"{p50f - p50p:+.3f} | {r.plain.errors + r.featured.errors} |"
        )
    return "\n".join(lines)
