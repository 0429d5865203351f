"""Render the Grafana dashboard's panels to a PNG from a live Prometheus (Grafana need not run).

    python deploy/plot_dashboard.py http://127.0.0.1:9090 --minutes 15 --out dashboard.png

The queries are read from deploy/grafana/dashboards/llm-proxy.json, so the picture always shows what
the dashboard shows: Grafana's variables are expanded ($route, $backend, $model to `.*` unless given
with --var; $__rate_interval, $__interval and $__range from the options), each target is asked of
/api/v1/query_range, series are labelled with the target's legendFormat, and the dashed threshold
lines of a panel (the 15 ms / 45 ms budgets) are drawn too.  Needs matplotlib (the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
import re
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_DASHBOARD = Path(__file__).parent / "grafana" / "dashboards" / "llm-proxy.json"
PLOTTED_TYPES = ("timeseries", "state-timeline")
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# How a Grafana unit is shown on a matplotlib axis: (scale, axis label).
_UNITS = {"s": (1000.0, "ms"), "percentunit": (100.0, "%"), "bytes": (1 / 2**20, "MiB"),
          "reqps": (1.0, "req/s"), "ops": (1.0, "/s")}


@dataclass
class Panel:
    title: str
    unit: str
    targets: list[tuple[str, str]]  # (expr, legendFormat)
    thresholds: list[tuple[float, str]] = field(default_factory=list)  # (value, colour) drawn as lines


def load_panels(path: Path = DEFAULT_DASHBOARD) -> list[Panel]:
    """The dashboard's graph panels in layout order (rows flattened)."""
    dash = json.loads(Path(path).read_text())
    flat = []
    for p in dash["panels"]:
        flat += [p, *p.get("panels", [])]
    flat.sort(key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    out = []
    for p in flat:
        if p.get("type") not in PLOTTED_TYPES:
            continue
        defaults = p.get("fieldConfig", {}).get("defaults", {})
        lines = []
        if defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode", "off") != "off":
            lines = [(s["value"], s["color"]) for s in defaults["thresholds"]["steps"] if s["value"] is not None]
        targets = [(t["expr"], t.get("legendFormat", "")) for t in p.get("targets", []) if t.get("expr")]
        out.append(Panel(p["title"], defaults.get("unit", ""), targets, lines))
    return out


def expand(expr: str, variables: dict[str, str]) -> str:
    """Replace Grafana's `$name` / `${name}` with their values; an unknown variable is an error."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in variables:
            raise KeyError(f"no value for dashboard variable ${name}")
        return variables[name]

    return _VAR.sub(sub, expr)


def legend(fmt: str, labels: dict[str, str]) -> str:
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return _LEGEND.sub(lambda m: labels.get(m.group(1), ""), fmt).strip()


def query_range(prom: str, expr: str, start: float, end: float, step: float, timeout: float = 10.0):
    """[(labels, [t...], [v...])] for `expr`, from Prometheus' HTTP API."""
    qs = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prom.rstrip('/')}/api/v1/query_range?{qs}", timeout=timeout) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {body.get('error', body)}")
    return [
        (s["metric"], [float(t) for t, _ in s["values"]], [float(v) for _, v in s["values"]])
        for s in body["data"]["result"]
    ]


def plot(prom: str, panels: list[Panel], variables: dict[str, str], minutes: float, step: float,
         out: Path, title: str = "LLM proxy") -> int:
    """Query every panel's targets and write the grid of plots to `out`; return the number of series."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.dates import DateFormatter

    end = time.time()
    start = end - minutes * 60
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(16, 3.6 * rows), squeeze=False)
    drawn = 0
    for ax, panel in zip(axes.flat, panels):
        scale, ylabel = _UNITS.get(panel.unit, (1.0, panel.unit))
        before = drawn
        for expr, fmt in panel.targets:
            for labels, ts, vs in query_range(prom, expand(expr, variables), start, end, step):
                times = [datetime.fromtimestamp(t, tz=timezone.utc) for t in ts]
                ax.plot(times, [v * scale for v in vs], linewidth=1.2, label=legend(fmt, labels))
                drawn += 1
        for value, colour in panel.thresholds:
            ax.axhline(value * scale, linestyle="--", linewidth=1, color=_colour(colour))
        if drawn == before:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
            ax.set_xticks([])
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_formatter(DateFormatter("%H:%M:%S"))
        ax.grid(alpha=0.3)
        if drawn > before:
            ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{title} — last {minutes:g} min", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.98))  # room for the title
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return drawn


def _colour(name: str) -> str:
    # Grafana's colour names that matplotlib does not know.
    return {"green": "tab:green", "orange": "tab:orange", "red": "tab:red"}.get(name, name)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("prometheus", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--step", type=float, default=0.0, help="seconds between points (default: range / 200)")
    ap.add_argument("--rate-interval", default="1m", help="value of $__rate_interval")
    ap.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD)
    ap.add_argument("--panel", action="append", default=[], help="plot only panels whose title has this text")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=REGEX", help="e.g. route=/v1/messages")
    ap.add_argument("--out", type=Path, default=Path("dashboard.png"))
    args = ap.parse_args(argv)

    step = args.step or max(1.0, args.minutes * 60 / 200)
    variables = {"route": ".*", "backend": ".*", "model": ".*",
                 "__rate_interval": args.rate_interval, "__interval": f"{step:g}s",
                 "__range": f"{args.minutes * 60:g}s"}
    variables.update(v.split("=", 1) for v in args.var)
    panels = load_panels(args.dashboard)
    if args.panel:
        panels = [p for p in panels if any(s.lower() in p.title.lower() for s in args.panel)]
    n = plot(args.prometheus, panels, variables, args.minutes, step, args.out)
    print(f"wrote {args.out}: {len(panels)} panels, {n} series")


if __name__ == "__main__":
    main()
