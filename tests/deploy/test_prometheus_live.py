"""A real Prometheus scraping the real proxy under load: histogram_quantile over the added latency
gives a number per route, every dashboard and alert query runs, and every metric they use is in the
proxy's live /metrics."""

from __future__ import annotations

import math
import urllib.request

import pytest
from deploy_support import (
    LIVE_ROUTES,
    METRICS,
    PromQLRefs,
    alert_rules,
    dashboard_exprs,
)
from prometheus_client.parser import text_string_to_metric_families

GRAFANA_VARS = {"$route": ".*", "$backend": ".*", "$model": ".*", "$__rate_interval": "30s"}


def grafana_expand(expr: str) -> str:
    for k in sorted(GRAFANA_VARS, key=len, reverse=True):
        expr = expr.replace(k, GRAFANA_VARS[k])
    return expr


def live_metric_names(proxy: str) -> set[str]:
    with urllib.request.urlopen(f"{proxy}/metrics", timeout=5) as r:
        text = r.read().decode()
    names = set()
    for fam in text_string_to_metric_families(text):
        names.add(fam.name)
        names.update(s.name for s in fam.samples)
        if fam.type == "counter":
            names.add(fam.name + "_total")
        elif fam.type == "histogram":
            names.update(fam.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def test_traffic_went_through(live_stack):
    assert live_stack.traffic.get(200, 0) > 10
    assert sum(n for s, n in live_stack.traffic.items() if s != 200) > 0  # demo-fail answered errors


def test_added_latency_quantile_is_a_number_per_route(live_stack):
    result = live_stack.query(
        "histogram_quantile(0.99, sum by (le, route) (rate(llm_proxy_added_latency_seconds_bucket"
        f'{{route=~"{"|".join(LIVE_ROUTES)}"}}[30s])))'
    )
    by_route = {r["metric"]["route"]: float(r["value"][1]) for r in result}
    assert set(by_route) == set(LIVE_ROUTES)
    for route, seconds in by_route.items():
        assert math.isfinite(seconds) and 0 <= seconds < 1.0, (route, seconds)


def test_live_metrics_cover_the_contract_and_every_query(live_stack):
    live = live_metric_names(live_stack.proxy)
    assert set(METRICS) <= live, f"missing from /metrics: {set(METRICS) - live}"
    used = {n for e in dashboard_exprs() + [r["expr"] for r in alert_rules()] for n in PromQLRefs(e).metric_names}
    assert used <= live, f"queries use series the proxy does not export: {used - live}"


@pytest.mark.parametrize("expr", sorted(set(dashboard_exprs())))
def test_dashboard_query_runs(live_stack, expr):
    live_stack.query(grafana_expand(expr))  # asserts status == success (valid PromQL, known functions)


def test_main_dashboard_panels_have_data(live_stack):
    for expr in dashboard_exprs():
        if any(m in expr for m in ("requests_total", "added_latency", "upstream_latency", "tokens_total")):
            assert live_stack.query(grafana_expand(expr)), expr


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_expr_runs(live_stack, rule):
    live_stack.query(rule["expr"])
