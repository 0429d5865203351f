"""Figures, table and plot of `llm-proxy bench routing` (one row per workload and strategy)."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

from .stats import percentile


def summarise(run: Any, workload: Any) -> dict[str, Any]:
    done = [s for s in run.samples if not s.error and s.ttft is not None]
    servers = [f"s{i}" for i in range(len(workload.servers))]
    per_server = Counter(s.server for s in done)
    mean = len(done) / len(servers) if done else 0.0
    ttfts = [s.ttft * 1000 for s in done]
    hits, queries = run.cache
    out: dict[str, Any] = {
        "workload": run.workload, "strategy": run.strategy, "requests": len(run.samples),
        "errors": sum(1 for s in run.samples if s.error),
        "error_kinds": dict(Counter(s.error for s in run.samples if s.error)),
        "ttft_p50_ms": round(percentile(ttfts, 50), 1) if ttfts else None,
        "ttft_p99_ms": round(percentile(ttfts, 99), 1) if ttfts else None,
        "throughput_rps": round(len(done) / run.wall, 2) if run.wall else None,
        "cache_hit_ratio": round(hits / queries, 3) if queries else None,
        "per_server": {name: per_server.get(name, 0) for name in servers},
        "load_spread": round(max(per_server.get(n, 0) for n in servers) / mean, 2) if mean else None,
        "ttft_p99_ms_by_server": {
            name: round(percentile(xs, 99), 1)
            for name in servers if (xs := [s.ttft * 1000 for s in done if s.server == name])
        },
        "gateway_view": run.loads,
        "prefix_affinity": run.affinity,
        "ttfts_ms": sorted(round(x, 2) for x in ttfts),
        "timeline": [(round(s.sent, 3), s.server, round(s.ttft * 1000, 1)) for s in done],
    }  # fmt: skip
    if run.back_at is not None and workload.restart is not None:
        name = f"s{workload.restart[0]}"
        firsts = [s.sent + s.ttft for s in done if s.server == name and s.sent + s.ttft >= run.back_at]
        out["back_at_s"] = round(run.back_at, 2)
        out["recovery_s"] = round(min(firsts) - run.back_at, 3) if firsts else None
    return out


COLUMNS = (
    ("workload", "workload"), ("strategy", "strategy"), ("requests", "requests"), ("errors", "errors"),
    ("TTFT p50 ms", "ttft_p50_ms"), ("TTFT p99 ms", "ttft_p99_ms"), ("throughput req/s", "throughput_rps"),
    ("prefix-cache hit ratio", "cache_hit_ratio"), ("load spread (max/mean)", "load_spread"),
    ("recovery s", "recovery_s"),
)  # fmt: skip


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results:
        cells = ["" if r.get(k) is None else str(r[k]) for _, k in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(results: list[dict[str, Any]], out_dir: str, plot: bool) -> list[str]:
    files = [os.path.join(out_dir, "routing.md"), os.path.join(out_dir, "routing.json")]
    with open(files[0], "w") as f:
        f.write(markdown(results))
    with open(files[1], "w") as f:
        json.dump(results, f, indent=1)
    if plot:
        png = plot_results(results, os.path.join(out_dir, "routing.png"))
        if png:
            files.append(png)
    return files


def plot_results(results: list[dict[str, Any]], path: str) -> str | None:
    """Top row: TTFT CDF per workload and strategy.  Bottom row: p99 TTFT, cache hit ratio and, for
    the restart workload, the restarted server's requests per half second."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return None
    workloads = list(dict.fromkeys(r["workload"] for r in results))
    fig, axes = plt.subplots(2, len(workloads), figsize=(5.2 * len(workloads), 7), squeeze=False)
    for col, w in enumerate(workloads):
        rows = [r for r in results if r["workload"] == w]
        ax = axes[0][col]
        for r in rows:
            xs = r["ttfts_ms"]
            if xs:
                ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=r["strategy"], linewidth=1.2)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decade labels only: no overlap
        ax.set_title(f"{w}: time to first token", fontsize=9)
        ax.set_xlabel("TTFT (ms, log)", fontsize=8)
        ax.set_ylabel("fraction of requests", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        _bottom(axes[1][col], w, rows)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _bottom(ax: Any, workload: str, rows: list[dict[str, Any]]) -> None:
    names = [r["strategy"] for r in rows]
    if workload == "restart":
        for r in rows:
            server = next(iter(reversed(r["per_server"])))
            times = [t for t, s, _ in r["timeline"] if s == server]
            end = max((t for t, _, _ in r["timeline"]), default=0.0)
            bins = [i * 0.5 for i in range(int(end / 0.5) + 2)]
            counts = [sum(1 for t in times if b <= t < b + 0.5) * 2 for b in bins]
            ax.plot(bins, counts, label=r["strategy"], linewidth=1.0)
        back = next((r.get("back_at_s") for r in rows if r.get("back_at_s")), None)
        if back is not None:
            ax.axvline(back, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title("restart: requests/s answered by the restarted server (dashed: back up)", fontsize=9)
        ax.set_xlabel("time sent (s)", fontsize=8)
        ax.legend(fontsize=7)
    elif workload == "shared-prompts":
        ax.bar(names, [r["cache_hit_ratio"] or 0 for r in rows], color="tab:green")
        ax.set_title("shared-prompts: prefix-cache hit ratio (tokens)", fontsize=9)
    else:
        ax.bar(names, [r["ttft_p99_ms"] or 0 for r in rows], color="tab:blue")
        ax.set_title(f"{workload}: TTFT p99 (ms)", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, axis="y")
