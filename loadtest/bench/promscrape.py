"""The proxy's own view: `llm_proxy_added_latency_seconds` read from /metrics before and after a load
point, so the self-reported added latency of exactly that load point can sit next to the measured one."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import aiohttp

from .stats import histogram_quantile

METRIC = "llm_proxy_added_latency_seconds"
_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Histogram:
    buckets: dict[float, float]  # upper bound -> cumulative count
    count: float
    sum: float

    def minus(self, before: "Histogram") -> "Histogram":
        return Histogram(
            {le: c - before.buckets.get(le, 0.0) for le, c in self.buckets.items()},
            self.count - before.count,
            self.sum - before.sum,
        )

    def quantile(self, q: float) -> float:
        return histogram_quantile(q, sorted(self.buckets.items()))

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan


def parse(text: str, metric: str, match: dict[str, str]) -> Histogram:
    """Sum the histogram series of `metric` whose labels include `match` (e.g. model and stream)."""
    buckets: dict[float, float] = {}
    count = total = 0.0
    for line in text.splitlines():
        if not line.startswith(metric):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group("labels") or ""))
        if any(labels.get(k) != v for k, v in match.items()):
            continue
        name, value = m.group("name"), float(m.group("value"))
        if name == f"{metric}_bucket":
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
        elif name == f"{metric}_count":
            count += value
        elif name == f"{metric}_sum":
            total += value
    return Histogram(buckets, count, total)


async def scrape(session: aiohttp.ClientSession, proxy_url: str, model: str, stream: bool) -> Histogram:
    async with session.get(proxy_url + "/metrics") as r:
        text = await r.text()
    return parse(text, METRIC, {"model": model, "stream": "true" if stream else "false"})
