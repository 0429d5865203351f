"""Shared facts and helpers for the deploy tests: the proxy's metric contract, a PromQL scanner, paths."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "llm-proxy.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
K8S = DEPLOY / "k8s"

# The metric contract the proxy exports: name -> (type, labels).
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "llm_proxy_added_latency_seconds": ("histogram", frozenset({"route", "backend", "model", "stream"})),
    "llm_proxy_upstream_latency_seconds": ("histogram", frozenset({"route", "backend", "model", "stream"})),
    "llm_proxy_time_to_first_token_seconds": ("histogram", frozenset({"route", "backend", "model"})),
    "llm_proxy_requests_total": ("counter", frozenset({"route", "backend", "model", "status"})),
    "llm_proxy_in_flight_requests": ("gauge", frozenset({"route"})),
    "llm_proxy_tokens_total": ("counter", frozenset({"backend", "model", "kind"})),
    "llm_proxy_retries_total": ("counter", frozenset({"backend", "model", "reason"})),
    "llm_proxy_fallbacks_total": ("counter", frozenset({"model", "reason"})),
    "llm_proxy_backend_up": ("gauge", frozenset({"backend"})),
    "llm_proxy_backend_ejections_total": ("counter", frozenset({"backend"})),
    "llm_proxy_process_cpu_seconds_total": ("counter", frozenset()),
    "llm_proxy_process_resident_memory_bytes": ("gauge", frozenset()),
}
# Labels Prometheus itself attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Routes the live stack's traffic uses (conftest.live_stack).
LIVE_ROUTES = ("/v1/chat/completions", "/v1/messages")
# The proxy's HTTP endpoints (probe paths must be among them).
ENDPOINTS = frozenset({
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/messages",
    "/v1/messages/count_tokens", "/metrics", "/health/live", "/health/ready",
})  # fmt: skip


def base_metric(name: str) -> str | None:
    """The contract name a series name belongs to (histogram suffixes stripped), or None."""
    if name in METRICS:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        stem = name.removesuffix(suffix)
        if stem != name and METRICS.get(stem, ("",))[0] == "histogram":
            return stem
    return None


_TOKEN = re.compile(
    r"""(?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)"""
    r"|(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z]*)"  # numbers and durations (5m, 1h30m)
    r"|(?P<var>\$\{?\w+\}?)"
    r"|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)"
    r"|(?P<ws>\s+)"
    r"|(?P<op>=~|!~|!=|==|>=|<=|.)",
    re.S,
)
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
# Aggregations are keywords too: `sum by (x) (...)` has no `(` right after `sum`.
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                 "bottomk", "topk", "quantile", "limitk", "limit_ratio"}  # fmt: skip
_KEYWORDS = _GROUPING | _AGGREGATIONS | {"bool", "and", "or", "unless", "offset", "inf", "nan", "atan2"}


class PromQLRefs:
    """What a PromQL expression refers to: metric selectors (name, matcher labels) and grouping labels.

    A small scanner, not a parser: strings, numbers, durations and `$grafana` variables are skipped;
    an identifier followed by `(` is a function or aggregation; `{...}` after a name holds its label
    matchers; `by (...)` / `on (...)` etc. hold grouping labels.  Syntax itself is checked by promtool
    and by a real Prometheus in the live tests.
    """

    def __init__(self, expr: str) -> None:
        self.selectors: list[tuple[str, frozenset[str]]] = []
        self.grouping: set[str] = set()
        toks = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr) if m.lastgroup != "ws"]
        i = 0
        while i < len(toks):
            kind, text = toks[i]
            nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
            if kind == "op" and text == "[":  # range or subquery: durations and variables only
                i = _skip_to(toks, i, "]")
            elif kind == "ident" and text in _GROUPING and nxt == "(":
                j = _skip_to(toks, i + 1, ")")
                self.grouping.update(t for k, t in toks[i + 2 : j] if k == "ident")
                i = j
            elif kind == "ident" and text not in _KEYWORDS and nxt != "(":
                labels: frozenset[str] = frozenset()
                if nxt == "{":
                    j = _skip_to(toks, i + 1, "}")
                    labels = _matcher_labels(toks[i + 2 : j])
                    i = j
                self.selectors.append((text, labels))
            elif kind == "op" and text == "{":  # a selector without a name: {__name__="..."}
                raise ValueError(f"selector without a metric name in {expr!r}")
            i += 1

    @property
    def metric_names(self) -> set[str]:
        return {name for name, _ in self.selectors}


def _skip_to(toks, i: int, closer: str) -> int:
    while i < len(toks) and toks[i][1] != closer:
        i += 1
    return i


def _matcher_labels(toks) -> frozenset[str]:
    # label op "value" [, ...]: the identifiers right before a matcher operator are label names.
    return frozenset(
        toks[k][1] for k in range(len(toks) - 1)
        if toks[k][0] == "ident" and toks[k + 1][1] in ("=", "!=", "=~", "!~")
    )


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    out = []
    for p in dashboard()["panels"]:
        out += [p, *p.get("panels", [])]
    return out


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", []) if t.get("expr")]


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def load_deploy_module(name: str):
    """Import deploy/<name>.py (deploy/ is not a package: its scripts run standalone)."""
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
