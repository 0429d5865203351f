"""The gateway against a reference hop measured in the same run (`--compare-hop minimal`): the ratios
issue 16's goal names, each next to its goal.

Pure functions over a run's results dict, so the arithmetic is tested without running anything.
Ratios are gateway / hop: for throughput higher is better (goal: at least x), for added latency and
CPU lower is better (goal: at most x).  Added latency is each target's latency minus the direct call's
at the same percentile in the same load point.  A goal stated for a longer run than this one (the
10-minute soak, 1,000 streams) is shown but not judged.
"""

from __future__ import annotations

import math
from typing import Any

HOP = "minimal-hop"
GATEWAY = "proxy"
# Issue 16's goal, per measure: (comparison, bound).
GOALS = {
    "throughput pass-through": (">=", 1.5),
    "throughput translated": (">=", 1.0),
    "added p50": ("<=", 0.8),
    "added p99": ("<=", 1.0),
    "added TTFT p50": ("<=", 0.8),
}
CHUNK_CPU_GOAL_US = 15.0
OPEN_STREAMS_GOAL = (1000, 100.0)  # streams, MiB
SOAK_GOAL = (600.0, 0.1)  # seconds of soak before judging, MiB/min of slope counted as flat


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0 or (isinstance(a, float) and math.isnan(a)):
        return None
    return round(a / b, 3)


def _met(goal: tuple[str, float] | None, value: float | None) -> bool | None:
    if goal is None or value is None:
        return None
    op, bound = goal
    return value >= bound if op == ">=" else value <= bound


def _row(measure: str, p: dict, gw: float | None, hop: float | None, goal_key: str | None = None,
         ratio: float | None = None) -> dict[str, Any]:  # fmt: skip
    goal = GOALS.get(goal_key) if goal_key else None
    r = _ratio(gw, hop) if ratio is None else ratio
    return {
        "measure": measure, "path": p["path"], "load": p["label"], "gateway": gw, "hop": hop, "ratio": r,
        "goal": f"{goal[0]} {goal[1]:g}x" if goal else None, "met": _met(goal, r),
    }  # fmt: skip


def _added(p: dict, name: str, key: str, q: int) -> float | None:
    a = (p.get(key) or {}).get(name)
    return a.get(f"p{q}_ms") if a else None


def point_rows(p: dict[str, Any], hop: str = HOP, gateway: str = GATEWAY) -> list[dict[str, Any]]:
    """The comparisons one load point supports (both the gateway and the hop measured in it)."""
    targets = p["targets"]
    if gateway not in targets or hop not in targets:
        return []
    gw, ref = targets[gateway], targets[hop]
    passthrough = p["path"].split("->")[0] == p["path"].split("->")[1]
    rows = []
    if p["mode"] == "closed" and (p["concurrency"] or 1) > 1:
        key = None if p["stream"] else ("throughput pass-through" if passthrough else "throughput translated")
        rows.append(_row("throughput (req/s)", p, gw["throughput_rps"], ref["throughput_rps"], key))
    if p["mode"] == "closed" and p["concurrency"] == 1:
        if p["stream"]:
            rows.append(_row("added TTFT p50 (ms)", p, _added(p, gateway, "added_ttft", 50),
                             _added(p, hop, "added_ttft", 50), "added TTFT p50"))  # fmt: skip
        else:
            rows.append(_row("added p50 (ms)", p, _added(p, gateway, "added", 50), _added(p, hop, "added", 50), "added p50"))
            rows.append(_row("added p99 (ms)", p, _added(p, gateway, "added", 99), _added(p, hop, "added", 99), "added p99"))
    rows.append(_row("CPU / request (µs)", p, gw["cpu_us_per_req"], ref["cpu_us_per_req"]))
    if p["stream"] and gw["cpu_us_per_chunk"] is not None:
        row = _row("CPU / relayed chunk (µs)", p, gw["cpu_us_per_chunk"], ref["cpu_us_per_chunk"])
        row["goal"], row["met"] = f"<= {CHUNK_CPU_GOAL_US:g} µs", gw["cpu_us_per_chunk"] <= CHUNK_CPU_GOAL_US
        rows.append(row)
    return rows


def memory_rows(results: dict[str, Any], hop: str = HOP) -> list[dict[str, Any]]:
    """1,000 concurrent streams (peak RSS) and the soak's RSS slope; goals judged only at full size."""
    rows = []
    s = results.get("open_streams")
    if s:
        ref = s.get("references", {}).get(hop, {})
        n, limit = OPEN_STREAMS_GOAL
        peak = s["rss_peak_sampled_mib"]
        ok = s["completed"] == s["streams"] and peak is not None and peak < limit
        rows.append({"measure": "peak RSS (MiB)", "path": "openai->openai", "load": f"{s['streams']} open streams",
                     "gateway": peak, "hop": ref.get("rss_peak_sampled_mib"),
                     "ratio": _ratio(peak, ref.get("rss_peak_sampled_mib")), "goal": f"< {limit:g} MiB at {n}",
                     "met": ok if s["streams"] >= n else None})  # fmt: skip
    k = results.get("soak")
    if k:
        seconds, flat = SOAK_GOAL
        sl = k.get("rss_slope_mib_per_min")
        rows.append({"measure": "RSS slope (MiB/min)", "path": "openai->openai", "load": f"soak {k['seconds']:g} s",
                     "gateway": sl, "hop": None, "ratio": None, "goal": f"<= {flat:g} over {seconds:g} s",
                     "met": (sl is not None and sl <= flat) if k["seconds"] >= seconds else None})  # fmt: skip
    return rows


def compare(results: dict[str, Any], hop: str = HOP, gateway: str = GATEWAY) -> dict[str, Any]:
    """`gateway`: the target to compare (another server of the gateway in `--isolated` runs: no memory rows)."""
    points = results["points"] + results.get("wrk_points", [])  # wrk_points: `--isolated` runs
    rows = [r for p in points for r in point_rows(p, hop, gateway)]
    if gateway == GATEWAY:
        rows += memory_rows(results, hop)
    return {"hop": hop, "gateway": gateway, "rows": rows, "machine": results.get("machine", {})}


def _f(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:,.3f}".rstrip("0").rstrip(".") if isinstance(x, float) else str(x)


def markdown(c: dict[str, Any]) -> str:
    m = c["machine"]
    load = ", ".join(f"{k.removeprefix('loadavg_')} {'/'.join(f'{x:.2f}' for x in v)}"
                     for k, v in m.items() if k.startswith("loadavg_"))  # fmt: skip
    name = "Gateway" if c.get("gateway", GATEWAY) == GATEWAY else f"Gateway `{c['gateway']}`"
    out = [f"{name} against the {c['hop']} (same run; ratio = gateway / hop)" + (f"; load average {load}" if load else "") + ".",
           "", "| Measure | Path | Load | Gateway | Hop | Ratio | Goal | Met |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    met = {True: "yes", False: "no", None: "–"}
    for r in c["rows"]:
        cells = [r["measure"], r["path"], r["load"], _f(r["gateway"]), _f(r["hop"]),
                 f"{r['ratio']:.2f}x" if r["ratio"] is not None else "–", r["goal"] or "–", met[r["met"]]]  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"
