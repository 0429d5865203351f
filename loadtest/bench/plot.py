"""The PNG: per load point, the latency distribution of every target (native, proxy, bare hop, ...)
as empirical CDFs on one axis, so a shift between native and proxied is visible at every quantile."""

from __future__ import annotations

import math
from typing import Any

MAX_PANELS = 24


def plot(results: dict[str, Any], path: str) -> str | None:
    """Write the figure to `path`; returns the path, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    points = [p for p in results["points"] if p["targets"]["native"]["samples_ms"]][:MAX_PANELS]
    if not points:
        return None
    cols = 4
    rows = math.ceil(len(points) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, p in zip(axes.flat, points):
        for name, t in p["targets"].items():
            xs = sorted(t["samples_ms"])
            if xs:
                ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=name, linewidth=1.2)
        ax.set_title(f"{p['profile']} {p['path']}\n{p['label']}", fontsize=8)
        ax.set_xlabel("latency (ms)", fontsize=8)
        ax.set_ylabel("fraction of requests", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(points):]:
        ax.set_visible(False)
    fig.suptitle("Latency distributions: native vs through the proxy (and the bare aiohttp hop)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
