"""deploy/prometheus: alert rules use only the proxy's metrics, promtool accepts rules and config, and
the rules' unit tests (alerts.test.yml) pass -- for alerts.yml and for the same rules shipped as a
PrometheusRule (deploy/k8s/prometheusrule.yaml), whose spec must equal alerts.yml."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from deploy_support import (
    ALERTS,
    DEPLOY,
    K8S,
    METRICS,
    TARGET_LABELS,
    PromQLRefs,
    alert_rules,
    base_metric,
)

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
needs_promtool = pytest.mark.skipif(
    shutil.which(PROMTOOL) is None,
    reason="promtool not installed (Debian package `prometheus`: apt-get install -y prometheus)",
)
RULES = alert_rules()
PROMETHEUS_RULE = K8S / "prometheusrule.yaml"


@pytest.fixture(params=["alerts.yml", "PrometheusRule"])
def rules_file(request, tmp_path):
    """The rules as Prometheus loads them: alerts.yml itself, or the PrometheusRule's spec (what the
    operator hands to Prometheus) written to a file beside a copy of the unit tests."""
    if request.param == "alerts.yml":
        return ALERTS
    spec = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]
    out = tmp_path / ALERTS.name
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(ALERTS.parent / "alerts.test.yml", tmp_path / "alerts.test.yml")
    return out


def test_prometheus_rule_ships_exactly_alerts_yml():
    doc = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert doc["spec"] == yaml.safe_load(ALERTS.read_text())  # one source of truth: edit both or neither
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}


def promtool(*args: str, cwd=ALERTS.parent) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_required_alerts_exist():
    names = {r["alert"] for r in RULES}
    assert names == {"LLMProxyAddedLatencyHigh", "LLMProxyErrorRateHigh", "LLMProxyBackendDown", "LLMProxyNoTraffic"}
    for r in RULES:
        assert r["labels"]["severity"] in ("info", "warning", "critical")
        assert r["annotations"]["summary"]


def test_added_latency_alert_is_p99_over_45ms_for_5_minutes():
    (r,) = [r for r in RULES if r["alert"] == "LLMProxyAddedLatencyHigh"]
    expr = " ".join(r["expr"].split())
    assert expr.startswith("histogram_quantile(0.99,") and expr.endswith("> 0.045")
    assert PromQLRefs(expr).metric_names == {"llm_proxy_added_latency_seconds_bucket"}
    assert r["for"] == "5m"


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r["alert"])
def test_rule_uses_only_exported_metrics_and_labels(rule):
    refs = PromQLRefs(rule["expr"])
    assert refs.selectors
    known = set(TARGET_LABELS)
    for name, labels in refs.selectors:
        base = base_metric(name)
        assert base is not None, f"{name} is not exported by the proxy"
        allowed = METRICS[base][1] | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
        assert labels <= allowed
        known |= allowed
    assert refs.grouping <= known


@needs_promtool
def test_promtool_accepts_the_rules(rules_file):
    res = promtool("check", "rules", rules_file.name, cwd=rules_file.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in res.stdout


@needs_promtool
def test_promtool_accepts_the_config():
    res = promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 rule files found" in res.stdout


@needs_promtool
def test_alert_unit_tests_pass(rules_file):
    res = promtool("test", "rules", "alerts.test.yml", cwd=rules_file.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@needs_promtool
def test_promtool_rejects_a_broken_rule(tmp_path):
    # guards the tests above against a promtool that accepts anything
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "A", "expr": "sum(("}]}]}))
    assert promtool("check", "rules", str(bad)).returncode != 0


def test_prometheus_config_scrapes_the_proxy_and_loads_the_rules():
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert [(ALERTS.parent / f).resolve() for f in cfg["rule_files"]] == [ALERTS.resolve()]
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "llm-proxy"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["proxy:4000"]
