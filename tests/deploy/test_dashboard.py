"""deploy/grafana: the dashboard's queries use only the proxy's metrics and labels, show every metric,
and the provisioning files point at it."""

from __future__ import annotations

import pytest
import yaml
from deploy_support import (
    DEPLOY,
    METRICS,
    TARGET_LABELS,
    PromQLRefs,
    base_metric,
    dashboard,
    dashboard_exprs,
    dashboard_panels,
)

EXPRS = dashboard_exprs()


@pytest.mark.parametrize(
    ("expr", "selectors", "grouping"),
    [
        (
            'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route=~"$route", x!="1"}[$__rate_interval])))',
            [("a_bucket", {"route", "x"})],
            {"le", "route"},
        ),
        ("sum(rate(b_total[5m])) / ignoring(status) group_left c", [("b_total", set()), ("c", set())], {"status"}),
        ('(sum(rate(d[10m])) or vector(0)) == 0 and on() e{k="a,b{c}"} > 1e3', [("d", set()), ("e", {"k"})], set()),
        ("max by (backend) (f) offset 5m", [("f", set())], {"backend"}),
    ],
)
def test_promql_scanner(expr, selectors, grouping):
    refs = PromQLRefs(expr)
    assert [(n, set(labels)) for n, labels in refs.selectors] == selectors
    assert refs.grouping == grouping


def test_dashboard_has_queries():
    assert len(EXPRS) >= 15


@pytest.mark.parametrize("expr", EXPRS)
def test_dashboard_expr_uses_only_exported_metrics_and_labels(expr):
    refs = PromQLRefs(expr)
    assert refs.selectors, expr
    known: set[str] = set(TARGET_LABELS)
    for name, labels in refs.selectors:
        base = base_metric(name)
        assert base is not None, f"{name} is not a metric the proxy exports"
        allowed = METRICS[base][1] | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
        assert labels <= allowed, f"{name} has no label(s) {labels - allowed}"
        known |= allowed
    assert refs.grouping <= known, f"grouping by unknown labels {refs.grouping - known}"


def test_every_exported_metric_is_on_the_dashboard():
    shown = {base_metric(n) for e in EXPRS for n in PromQLRefs(e).metric_names}
    assert shown == set(METRICS)


def test_latency_panels_show_p50_p95_p99_per_route_and_backend():
    for metric in ("llm_proxy_added_latency_seconds", "llm_proxy_upstream_latency_seconds"):
        exprs = [e for e in EXPRS if f"{metric}_bucket" in e]
        quantiles = sorted(e.split("(", 1)[1].split(",", 1)[0] for e in exprs)
        assert quantiles == ["0.5", "0.95", "0.99"]
        for e in exprs:
            assert {"le", "route", "backend"} <= PromQLRefs(e).grouping


def test_added_latency_panel_has_15ms_and_45ms_reference_lines():
    (panel,) = [p for p in dashboard_panels() if "llm_proxy_added_latency_seconds" in str(p.get("targets"))]
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s"
    assert defaults["custom"]["thresholdsStyle"]["mode"] in ("line", "dashed", "line+area", "dashed+area")
    values = {s["value"] for s in defaults["thresholds"]["steps"]}
    assert {0.015, 0.045} <= values


@pytest.mark.parametrize("var", ["route", "backend", "model"])
def test_template_variable_defined_and_used(var):
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    v = variables[var]
    assert v["type"] == "query" and v["includeAll"] and v["allValue"] == ".*"
    # the variable's values come from a label the proxy exports
    assert f", {var})" in v["definition"] and "llm_proxy_requests_total" in v["definition"]
    assert any(f'{var}=~"${var}"' in e for e in EXPRS)


def test_panels_have_unique_ids_and_do_not_overlap():
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in panels:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        assert g["x"] + g["w"] <= 24
        cells |= mine


def test_panels_query_the_templated_datasource():
    for p in dashboard_panels():
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}"
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])


def test_provisioning_points_at_the_dashboard_and_prometheus():
    prov = DEPLOY / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"]
    (prom,) = [d for d in ds if d["type"] == "prometheus"]
    assert prom["isDefault"] and prom["url"] == "http://prometheus:9090"
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == prom["uid"]

    (provider,) = yaml.safe_load((prov / "dashboards" / "dashboards.yml").read_text())["providers"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = dict(v.rsplit(":", 2)[:2] if v.count(":") > 1 else v.split(":") for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == provider["options"]["path"] + "/llm-proxy.json"
    assert dashboard()["uid"] == "llm-proxy"  # DEPLOY.md's URL: /d/llm-proxy
