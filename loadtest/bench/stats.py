"""Arithmetic of the report: percentiles, latency summaries, added overhead, histogram quantiles.

Pure functions over lists of seconds, so the report's numbers are testable without running anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

QUANTILES = (50, 95, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default);
    NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class Summary:
    n: int
    mean: float
    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Summary":
        mean = sum(values) / len(values) if values else math.nan
        return cls(len(values), mean, *(percentile(values, q) for q in QUANTILES))

    def ms(self) -> dict[str, float]:
        return {"n": self.n, "mean_ms": self.mean * 1e3, **{f"p{q}_ms": getattr(self, f"p{q}") * 1e3 for q in QUANTILES}}


@dataclass
class Overhead:
    """What the hop adds at one quantile: proxied minus native, in ms and as a share of native."""

    ms: float
    pct: float


def overhead(native: float, proxied: float) -> Overhead:
    """Added latency at matching quantiles.  Percentiles of two independent runs do not subtract
    exactly (the difference of p99s is not the p99 of the differences), which is why the runs are
    interleaved and why the report also shows the proxy's own per-request measurement."""
    ms = (proxied - native) * 1e3
    pct = (proxied - native) / native * 100.0 if native > 0 else math.nan
    return Overhead(ms, pct)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile: q in 0..1 over cumulative (upper bound, count) buckets sorted by
    bound, the last bound being +Inf; linear interpolation inside the bucket."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (e.g. RSS MiB over seconds); NaN for fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return math.nan
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return math.nan
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def rate(requests: int, seconds: float) -> float:
    return requests / seconds if seconds > 0 else 0.0
