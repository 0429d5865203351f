"""deploy/plot_dashboard.py: reads the dashboard's panels, expands Grafana variables, and renders a PNG
from a real Prometheus."""

from __future__ import annotations

import pytest
from deploy_support import DASHBOARD, dashboard_exprs, load_deploy_module

plot_dashboard = load_deploy_module("plot_dashboard")


def test_load_panels_follows_the_dashboard():
    panels = plot_dashboard.load_panels(DASHBOARD)
    assert [e for p in panels for e, _ in p.targets] == dashboard_exprs()
    (added,) = [p for p in panels if p.title.startswith("Added latency")]
    assert added.unit == "s" and [v for v, _ in added.thresholds] == [0.015, 0.045]
    assert all(p.thresholds == [] for p in panels if p.title.startswith("Upstream"))


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('rate(x{route=~"$route"}[$__rate_interval])', 'rate(x{route=~".*"}[1m])'),
        ("increase(x[${__range}])", "increase(x[900s])"),
        ("sum(x)", "sum(x)"),
    ],
)
def test_expand(expr, expected):
    variables = {"route": ".*", "__rate_interval": "1m", "__range": "900s"}
    assert plot_dashboard.expand(expr, variables) == expected


def test_expand_rejects_unknown_variable():
    with pytest.raises(KeyError, match="nope"):
        plot_dashboard.expand("x{a=~\"$nope\"}", {})


@pytest.mark.parametrize(
    ("fmt", "labels", "expected"),
    [
        ("p99 {{route}} {{ backend }}", {"route": "/v1/messages", "backend": "emu"}, "p99 /v1/messages emu"),
        ("{{missing}} x", {}, "x"),
        ("", {"b": "2", "a": "1"}, "a=1, b=2"),
        ("", {}, "value"),
    ],
)
def test_legend(fmt, labels, expected):
    assert plot_dashboard.legend(fmt, labels) == expected


def test_renders_png_from_live_prometheus(live_stack, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "dashboard.png"
    plot_dashboard.main([live_stack.prometheus, "--minutes", "1", "--step", "1", "--rate-interval", "10s",
                         "--out", str(out)])  # fmt: skip
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    height, width = imread(out).shape[:2]
    rows = (len(plot_dashboard.load_panels(DASHBOARD)) + 1) // 2
    assert width > 1000 and height > 200 * rows


def test_plot_counts_series_and_honours_panel_filter(live_stack, tmp_path):
    pytest.importorskip("matplotlib")
    panels = [p for p in plot_dashboard.load_panels(DASHBOARD) if "Requests / s by route" in p.title]
    variables = {"route": ".*", "backend": ".*", "model": ".*", "__rate_interval": "10s"}
    n = plot_dashboard.plot(live_stack.prometheus, panels, variables, 1, 1, tmp_path / "x.png")
    assert n >= 2  # at least one series per route (and status)
