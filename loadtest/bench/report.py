"""The report: per load point and target, latency percentiles, what the hop adds over the native call,
time to first token, throughput, errors, CPU per request / chunk and memory -- as a dict (written as
JSON) and as Markdown tables in the shape of the published comparison."""

from __future__ import annotations

import math
from typing import Any

from .loadgen import Batch
from .stats import QUANTILES, Summary, overhead, rate, slope


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)


def target_stats(m: Any) -> dict[str, Any]:
    """Numbers of one target over a load point (`m` is a runner.Measured; cpu None = not our process)."""
    b: Batch = m.batch
    out: dict[str, Any] = {
        "requests": b.requests,
        "errors": b.errors,
        "latency": {k: _r(v) for k, v in Summary.of(b.latencies).ms().items()},
        "ttft": {k: _r(v) for k, v in Summary.of(b.ttfts).ms().items()} if b.ttfts else None,
        "throughput_rps": _r(rate(len(b.latencies), b.wall), 1),
        "events": b.events,
        "cpu_us_per_req": None,
        "cpu_us_per_chunk": None,
        "rss_mib": _r(m.rss_mib, 1) if m.cpu is not None else None,
        "peak_mib": _r(m.peak_mib, 1) if m.cpu is not None else None,
        "error_samples": b.error_samples,
        "samples_ms": [round(x * 1e3, 3) for x in b.latencies],
    }
    if m.cpu is not None and b.requests:
        out["cpu_us_per_req"] = _r(m.cpu / b.requests * 1e6, 1)
        if b.events:
            out["cpu_us_per_chunk"] = _r(m.cpu / b.events * 1e6, 2)
    return out


def added(native: dict[str, Any], other: dict[str, Any], key: str = "latency") -> dict[str, float | None] | None:
    """Other minus native at p50/p95/p99 and mean, in ms, and as % of native."""
    a, b = native.get(key), other.get(key)
    if not a or not b or not a["n"] or not b["n"]:
        return None
    out: dict[str, float | None] = {}
    for q in QUANTILES:
        o = overhead(a[f"p{q}_ms"] / 1e3, b[f"p{q}_ms"] / 1e3)
        out[f"p{q}_ms"], out[f"p{q}_pct"] = _r(o.ms), _r(o.pct, 2)
    out["mean_ms"] = _r(b["mean_ms"] - a["mean_ms"])
    return out


def self_reported(hist: Any, external_mean_ms: float | None) -> dict[str, float | None] | None:
    """The proxy's own added-latency histogram for the load point, and how far its mean is from the
    externally measured added mean (external includes the extra loopback hop and HTTP parsing that
    happen before the proxy's clock starts)."""
    if hist is None or not hist.count:
        return None
    mean_ms = hist.mean * 1e3
    return {
        "count": int(hist.count),
        "mean_ms": _r(mean_ms),
        "p50_ms": _r(hist.quantile(0.5) * 1e3),
        "p99_ms": _r(hist.quantile(0.99) * 1e3),
        "external_minus_self_ms": _r(external_mean_ms - mean_ms) if external_mean_ms is not None else None,
    }


def point_result(lp: Any, rate_rps: float, measured: dict[str, Any], self_hist: Any,
                 key_hists: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    targets = {name: target_stats(m) for name, m in measured.items()}
    native = targets["native"]
    adds = {name: added(native, t) for name, t in targets.items() if name != "native"}
    ttft_adds = {name: added(native, t, "ttft") for name, t in targets.items() if name != "native"} if lp.stream else {}
    proxy = "proxy" if "proxy" in targets else None
    external = None
    if proxy:
        a = ttft_adds.get(proxy) if lp.stream else adds.get(proxy)
        external = a["mean_ms"] if a else None
    return {
        "profile": lp.profile, "path": lp.path, "stream": lp.stream, "mode": lp.mode, "label": lp.label,
        "concurrency": lp.concurrency if lp.mode == "closed" else None, "rate_rps": rate_rps or None,
        "targets": targets, "added": adds, "added_ttft": ttft_adds,
        "self_reported": self_reported(self_hist, external) if proxy else None,
        # limited-key proxies (state stores): their own added-latency histograms, for the same model
        "self_reported_keys": {name: self_reported(h, None) for name, h in (key_hists or {}).items()},
        "store_cost": store_cost(targets),
    }  # fmt: skip


STORED = ("proxy-store-", "proxy-chain-")  # Responses API targets with `store: true` (runner.responses_targets)


def store_cost(targets: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Store on minus store off: each stored target against the `store: false` proxy of the same
    load point (interleaved with it), at p50 / p99 / mean and in CPU per request."""
    off = targets.get("proxy")
    out: dict[str, dict[str, float | None]] = {}
    for name, t in targets.items():
        if off is None or not name.startswith(STORED):
            continue
        d = added(off, t) or {}
        cpu = None
        if t["cpu_us_per_req"] is not None and off["cpu_us_per_req"] is not None:
            cpu = _r(t["cpu_us_per_req"] - off["cpu_us_per_req"], 1)
        out[name] = {"p50_ms": d.get("p50_ms"), "p99_ms": d.get("p99_ms"), "mean_ms": d.get("mean_ms"),
                     "cpu_us_per_req": cpu}  # fmt: skip
    return out


def open_streams_result(n: int, batch: Batch, base_mib: float, peak_mib: float, end: Any) -> dict[str, Any]:
    return {
        "streams": n, "completed": len(batch.latencies), "errors": batch.errors,
        "rss_before_mib": _r(base_mib, 1), "rss_peak_sampled_mib": _r(peak_mib, 1),
        "rss_after_mib": _r(end.rss_mib, 1), "vm_hwm_mib": _r(end.peak_mib, 1),
        "latency": {k: _r(v) for k, v in Summary.of(batch.latencies).ms().items()},
        "error_samples": batch.error_samples,
    }  # fmt: skip


def soak_result(seconds: float, batch: Batch, samples: list[tuple[float, float]]) -> dict[str, Any]:
    mid = samples[len(samples) // 2] if samples else (0.0, math.nan)
    return {
        "seconds": seconds, "requests": batch.requests, "errors": batch.errors,
        "throughput_rps": _r(rate(len(batch.latencies), batch.wall), 1),
        "rss_start_mib": _r(samples[0][1], 1) if samples else None,
        "rss_middle_mib": _r(mid[1], 1), "rss_end_mib": _r(samples[-1][1], 1) if samples else None,
        # least squares over every sample: a leak shows as a steady positive slope
        "rss_slope_mib_per_min": _r(slope(samples) * 60, 3),
        "rss_samples": [(_r(t, 1), _r(r, 1)) for t, r in samples],
        "latency": {k: _r(v) for k, v in Summary.of(batch.latencies).ms().items()},
    }  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Markdown

HEADER = (
    "| Backend profile | Path | Load | Target | Native p50 / p95 / p99 (ms) | Target p50 / p95 / p99 (ms) "
    "| Added p50 / p95 / p99 (ms) | Added p50 (%) | TTFT native → target p50 (ms) | Added TTFT p50 (ms) "
    "| Throughput target / native (req/s) | Errors | CPU / req (µs) | CPU / chunk (µs) | Peak RSS (MiB) "
    "| Self-reported added mean / p50 (ms) | External added mean (ms) |"
)


def _f(x: Any, nd: int = 2) -> str:
    if x is None:
        return "–"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _triple(d: dict | None, nd: int = 2) -> str:
    if not d:
        return "–"
    return " / ".join(_f(d.get(f"p{q}_ms"), nd) for q in QUANTILES)


def _row(p: dict[str, Any], name: str) -> str:
    native, t = p["targets"]["native"], p["targets"][name]
    add, ttft_add = p["added"].get(name), (p["added_ttft"] or {}).get(name)
    ttft = f"{_f(native['ttft']['p50_ms'])} → {_f(t['ttft']['p50_ms'])}" if native["ttft"] and t["ttft"] else "–"
    sr = p["self_reported"] if name == "proxy" else p.get("self_reported_keys", {}).get(name)
    ext = (ttft_add if p["stream"] else add) if name == "proxy" else None
    load = p["label"].split(",")[0] if p["rate_rps"] is None else f"open {p['rate_rps']:g} req/s"
    cells = [
        p["profile"], p["path"], f"{load}{', stream' if p['stream'] else ''}", name,
        _triple(native["latency"]), _triple(t["latency"]), _triple(add, 3),
        _f(add.get("p50_pct") if add else None, 1), ttft, _f(ttft_add["p50_ms"] if ttft_add else None, 3),
        f"{_f(t['throughput_rps'], 0)} / {_f(native['throughput_rps'], 0)}",
        f"{t['errors']} / {native['errors']}", _f(t["cpu_us_per_req"], 0), _f(t["cpu_us_per_chunk"], 1),
        _f(t["peak_mib"], 1), f"{_f(sr['mean_ms'], 3)} / {_f(sr['p50_ms'], 3)}" if sr else "–",
        _f(ext["mean_ms"], 3) if ext else "–",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def markdown(results: dict[str, Any]) -> str:
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for p in results["points"]:
        lines += [_row(p, name) for name in p["targets"] if name != "native"]
    out = "\n".join(lines) + "\n"
    if results.get("open_streams"):
        s = results["open_streams"]
        out += ("\n| Target | Open streams | Completed | Errors | RSS before (MiB) | RSS peak sampled (MiB) | VmHWM (MiB) |\n"
                "|---|---|---|---|---|---|---|\n")
        for name, r in [("proxy", s), *s.get("references", {}).items()]:
            out += (f"| {name} | {r['streams']} | {r['completed']} | {r['errors']} | {_f(r['rss_before_mib'], 1)} "
                    f"| {_f(r['rss_peak_sampled_mib'], 1)} | {_f(r['vm_hwm_mib'], 1)} |\n")  # fmt: skip
    if results.get("soak"):
        s = results["soak"]
        out += ("\n| Soak (s) | Requests | Errors | req/s | RSS start / middle / end (MiB) | RSS slope (MiB/min) |\n"
                "|---|---|---|---|---|---|\n"
                f"| {s['seconds']:g} | {s['requests']} | {s['errors']} | {_f(s['throughput_rps'], 0)} "
                f"| {_f(s['rss_start_mib'], 1)} / {_f(s['rss_middle_mib'], 1)} / {_f(s['rss_end_mib'], 1)} "
                f"| {_f(s['rss_slope_mib_per_min'], 3)} |\n")  # fmt: skip
    stored = [p for p in results["points"] if p.get("store_cost")]
    if stored:
        out += ("\n| Path | Load | Target | Added p50 / p99 (ms) | CPU / req (µs) | Store on − off p50 / p99 (ms) "
                "| Store on − off mean (ms) | Store on − off CPU / req (µs) |\n|---|---|---|---|---|---|---|---|\n")
        for p in stored:
            load = p["label"].split(",")[0] + (", stream" if p["stream"] else "")
            for name in ("proxy", *p["store_cost"]):
                add, t, c = p["added"].get(name) or {}, p["targets"][name], p["store_cost"].get(name)
                diff = f"{_f(c['p50_ms'], 3)} / {_f(c['p99_ms'], 3)}" if c else "store off"
                out += (f"| {p['path']} | {load} | {name} | {_f(add.get('p50_ms'), 3)} / {_f(add.get('p99_ms'), 3)} "
                        f"| {_f(t['cpu_us_per_req'], 0)} | {diff} | {_f(c['mean_ms'], 3) if c else '–'} "
                        f"| {_f(c['cpu_us_per_req'], 0) if c else '–'} |\n")  # fmt: skip
    if results.get("state_cost"):
        out += ("\n| State store | Phase | Requests | p50 / p95 / p99 (ms) | Mean (ms) |\n|---|---|---|---|---|\n"
                + "".join(f"| {store} | {phase} | {s['n']} | {_f(s['p50_ms'], 4)} / {_f(s['p95_ms'], 4)} / "
                          f"{_f(s['p99_ms'], 4)} | {_f(s['mean_ms'], 4)} |\n"
                          for store, phases in results["state_cost"].items() for phase, s in phases.items()))  # fmt: skip
    return out
