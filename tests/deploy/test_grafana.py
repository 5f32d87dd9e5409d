"""The Grafana dashboard (config/grafana/messages-gateway.json): built only on metric names the
gateway exports, every panel with a title and a query, every part of the gateway covered."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from gateway.metrics import Metrics

from .support import DASHBOARD, load_json

METRIC = re.compile(r"gateway_[a-z_]+")
SUFFIX = re.compile(r"_(bucket|sum|count|total)$")
#: what the dashboard must show, by the metric (base name) that shows it
COVERS = {
    "requests": "gateway_requests",
    "latency": "gateway_request_duration_seconds",
    "overhead": "gateway_overhead_seconds",
    "time to first byte": "gateway_time_to_first_byte_seconds",
    "tokens": "gateway_tokens",
    "in flight": "gateway_in_flight_requests",
    "open streams": "gateway_open_streams",
    "upstream attempts": "gateway_upstream_attempts",
    "upstream failures": "gateway_upstream_failures",
    "fallbacks": "gateway_fallbacks",
    "circuits": "gateway_upstream_circuit_state",
    "key pools": "gateway_upstream_key_events",
    "per-key requests": "gateway_key_requests",
    "per-key tokens": "gateway_key_tokens",
    "per-key cost": "gateway_key_cost",
    "per-key limits": "gateway_key_limited",
    "ledger drops": "gateway_ledger_dropped",
    "safeguard verdicts": "gateway_safeguard_verdicts",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = load_json(DASHBOARD)
    return doc


@pytest.fixture(scope="module")
def exported(monkeypatch_module: pytest.MonkeyPatch) -> set[str]:
    """Every metric family of the app's own registry, as prometheus-client names it."""
    monkeypatch_module.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = Metrics(in_flight=lambda: 0, open_streams=lambda: 0)
    names = {family.name for family in metrics.registry.collect()}
    # the same families as /metrics declares them: counters there with their _total, and
    # prometheus-client's own <name>_created gauges beside the label-less ones
    text = metrics.render().decode()
    typed = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    assert {SUFFIX.sub("", n) for n in typed if not n.endswith("_created")} == names
    return names


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and template variable queries."""
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def base_names(exprs: list[str]) -> set[str]:
    return {SUFFIX.sub("", name) for expr in exprs for name in METRIC.findall(expr)}


def test_dashboard_model(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] == 39
    assert dashboard["uid"] == "messages-gateway"
    assert dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_every_panel_has_a_title_and_a_query(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        assert panel.get("title"), panel
        if panel["type"] == "row":  # a row only groups the panels after it
            continue
        targets = panel.get("targets", [])
        assert targets, panel["title"]
        for target in targets:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_panels_fit_the_grid(dashboard: dict[str, Any]) -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))


def test_only_metrics_the_gateway_exports(dashboard: dict[str, Any], exported: set[str]) -> None:
    used = base_names(queries(dashboard))
    assert used, "no gateway_* metric in any query"
    assert used - exported == set()


def test_queries_use_the_exposed_suffixes(dashboard: dict[str, Any], exported: set[str]) -> None:
    """Counters are queried as ``_total``, histograms as ``_bucket``/``_sum``/``_count``, gauges
    bare: a name without its suffix would match no series."""
    metrics = Metrics(in_flight=lambda: 0, open_streams=lambda: 0)
    kinds = {family.name: family.type for family in metrics.registry.collect()}
    for expr in queries(dashboard):
        for name in METRIC.findall(expr):
            base = SUFFIX.sub("", name)
            suffix = name[len(base) :]
            allowed = {"counter": {"_total"}, "histogram": {"_bucket", "_sum", "_count"}}.get(
                kinds[base], {""}
            )
            assert suffix in allowed, f"{name} in {expr}"


def test_queries_use_the_metrics_labels(dashboard: dict[str, Any]) -> None:
    """Every label a query groups by or matches on is one its metrics carry (or Prometheus
    adds), and every ``{{label}}`` of a legend is one the query keeps."""
    metrics = Metrics(in_flight=lambda: 0, open_streams=lambda: 0)
    labels: dict[str, set[str]] = {
        m._name: set(m._labelnames)  # prometheus-client keeps them there
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
    }
    scrape = {"instance", "job", "le"}
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr: str = target["expr"]
            allowed = set(scrape)
            for name in METRIC.findall(expr):
                allowed |= labels.get(SUFFIX.sub("", name), set())
            grouped = {
                label.strip()
                for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
                for label in group.split(",")
            }
            matched = {
                label
                for selector in re.findall(r"\{([^}]*)\}", expr)
                for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector)
            }
            assert grouped | matched <= allowed, f"{panel['title']}: {expr}"
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend <= grouped, f"{panel['title']}: legend {legend} of {expr}"


@pytest.mark.parametrize("what", sorted(COVERS))
def test_dashboard_covers(dashboard: dict[str, Any], exported: set[str], what: str) -> None:
    metric = COVERS[what]
    assert metric in exported, f"{metric} is no longer exported"
    assert metric in base_names(queries(dashboard)), f"no panel shows {what} ({metric})"


def test_errors_and_percentiles_are_shown(dashboard: dict[str, Any]) -> None:
    exprs = queries(dashboard)
    assert any("gateway_requests_total" in e and "error_type" in e for e in exprs)
    assert any("gateway_requests_total" in e and 'status=~"5..' in e for e in exprs)
    for histogram in (
        "gateway_request_duration_seconds",
        "gateway_time_to_first_byte_seconds",
        "gateway_overhead_seconds",
    ):
        quantiles = {
            m.group(1)
            for e in exprs
            if f"{histogram}_bucket" in e
            for m in [re.search(r"histogram_quantile\((0\.\d+)", e)]
            if m
        }
        assert {"0.5", "0.95", "0.99"} <= quantiles, histogram
