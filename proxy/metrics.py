"""Prometheus metrics.  Labelled children are bound once per (route, backend, model, stream) series, so a
request costs one dict lookup and a few lock-protected float additions -- no label formatting on the
hot path.

With several workers (`serve --workers N`) prometheus-client's multiprocess mode is used: the CLI sets
PROMETHEUS_MULTIPROC_DIR (cleaned at start) *before* this module is imported, every worker writes its
own mmap files, and `/metrics` on any worker reports the sum over all of them.  Gauges declare how they
aggregate (`livesum` for in-flight requests, `livemax` for backend up).
"""

from __future__ import annotations

import os
import resource
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# Fine enough to tell 0.1 ms from 1 ms and 15 ms from 45 ms (the field's published overheads).
ADDED_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.03, 0.045, 0.06, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
UPSTREAM_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
    7.5, 10.0, 20.0, 30.0, 60.0, 120.0,
)  # fmt: skip

REGISTRY = CollectorRegistry(auto_describe=True)

ADDED = Histogram(
    "llm_proxy_added_latency_seconds",
    "Time spent in the proxy itself: arrival to response end minus the upstream's time "
    "(streams: added time to first token).",
    ("route", "backend", "model", "stream"),
    buckets=ADDED_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM = Histogram(
    "llm_proxy_upstream_latency_seconds",
    "Time the upstream took: request sent to last byte received.",
    ("route", "backend", "model", "stream"),
    buckets=UPSTREAM_BUCKETS,
    registry=REGISTRY,
)
TTFT = Histogram(
    "llm_proxy_time_to_first_token_seconds",
    "Streams: request arrival to the first content event written to the client.",
    ("route", "backend", "model"),
    buckets=UPSTREAM_BUCKETS,
    registry=REGISTRY,
)
REQUESTS = Counter(
    "llm_proxy_requests",
    "Requests answered, by HTTP status.",
    ("route", "backend", "model", "status"),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "llm_proxy_in_flight_requests",
    "Requests being served.",
    ("route",),
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
TOKENS = Counter(
    "llm_proxy_tokens",
    "Tokens reported by backends' usage.",
    ("backend", "model", "kind"),
    registry=REGISTRY,
)
RETRIES = Counter(
    "llm_proxy_retries",
    "Upstream attempts retried, by reason.",
    ("backend", "model", "reason"),
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "llm_proxy_fallbacks",
    "Requests moved to a fallback model, by reason.",
    ("model", "reason"),
    registry=REGISTRY,
)
BACKEND_UP = Gauge(
    "llm_proxy_backend_up",
    "1 while a deployment's backend takes traffic, 0 while its circuit breaker has it ejected.",
    ("backend",),
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
EJECTIONS = Counter(
    "llm_proxy_backend_ejections",
    "Times a circuit breaker ejected a backend deployment.",
    ("backend",),
    registry=REGISTRY,
)
KEY_REQUESTS = Counter(
    "llm_proxy_key_requests",
    "Requests per client key (by its name, never the secret), by HTTP status.",
    ("key_name", "model", "status"),
    registry=REGISTRY,
)
KEY_TOKENS = Counter(
    "llm_proxy_key_tokens",
    "Tokens charged to a client key (backend usage; a cut stream's estimate).",
    ("key_name", "model", "kind"),
    registry=REGISTRY,
)
KEY_SPEND = Counter(
    "llm_proxy_key_spend_usd",
    "USD spent by a client key, from the models' configured prices.",
    ("key_name", "model"),
    registry=REGISTRY,
)
NOT_STORED = Counter(
    "llm_proxy_responses_not_stored",
    "Answers with store on that were served but not stored: too_large, conversation_full, store_unavailable.",
    ("reason",),
    registry=REGISTRY,
)
BACKEND_LOAD = Gauge(
    "llm_proxy_backend_load",
    "A model server's own load, scraped from its metrics: waiting, running (requests), kv_cache "
    "(fraction used), stale (1 while routing falls back to the gateway's in-flight counts).",
    ("backend", "signal"),
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
PREFIX_AFFINITY = Counter(
    "llm_proxy_prefix_affinity",
    "Prefix-affinity routing decisions: hit (the prefix's own server) or spill (it was full).",
    ("result",),
    registry=REGISTRY,
)
PROCESS_CPU = Counter(
    "llm_proxy_process_cpu_seconds",
    "CPU time of the proxy's worker processes.",
    registry=REGISTRY,
)
PROCESS_RSS = Gauge(
    "llm_proxy_process_resident_memory_bytes",
    "Resident memory of the proxy's worker processes (summed).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)


class _Series:
    """The per-request children of one (route, backend, model, stream), bound on first use (a child
    that was never used is never exported, as before) and kept: a request then costs one dict lookup
    for its series, none for the label values."""

    __slots__ = ("labels", "stream", "added", "upstream", "ttft", "requests")

    def __init__(self, route: str, backend: str, model: str, stream: bool) -> None:
        self.labels = (route, backend, model)
        self.stream = "true" if stream else "false"
        self.added = self.upstream = self.ttft = None
        self.requests: dict[int, Any] = {}  # status -> counter

    def observe(self, status: int, added: float | None, upstream: float | None, ttft: float | None) -> None:
        if added is not None:
            h = self.added
            if h is None:
                h = self.added = ADDED.labels(*self.labels, self.stream)
            h.observe(added)
        if upstream is not None:
            h = self.upstream
            if h is None:
                h = self.upstream = UPSTREAM.labels(*self.labels, self.stream)
            h.observe(upstream)
        if ttft is not None:
            h = self.ttft
            if h is None:
                h = self.ttft = TTFT.labels(*self.labels)
            h.observe(ttft)
        c = self.requests.get(status)
        if c is None:
            c = self.requests[status] = REQUESTS.labels(*self.labels, str(status))
        c.inc()


class Recorder:
    """Bound labelled children for the per-request metrics."""

    __slots__ = ("_series", "_in_flight", "_tokens", "_keys")

    def __init__(self) -> None:
        self._series: dict[tuple, _Series] = {}
        self._in_flight: dict[str, object] = {}
        self._tokens: dict[tuple, tuple] = {}
        self._keys: dict[tuple, tuple] = {}

    def in_flight(self, route: str):
        g = self._in_flight.get(route)
        if g is None:
            g = self._in_flight[route] = IN_FLIGHT.labels(route)
        return g

    def observe(
        self,
        route: str,
        backend: str,
        model: str,
        stream: bool,
        status: int,
        added: float | None,
        upstream: float | None,
        ttft: float | None,
    ) -> None:
        key = (route, backend, model, stream)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(route, backend, model, stream)
        series.observe(status, added, upstream, ttft)

    def tokens(self, backend: str, model: str, prompt: int, completion: int) -> None:
        key = (backend, model)
        children = self._tokens.get(key)
        if children is None:
            children = self._tokens[key] = (TOKENS.labels(backend, model, "prompt"),
                                            TOKENS.labels(backend, model, "completion"))  # fmt: skip
        if prompt:
            children[0].inc(prompt)
        if completion:
            children[1].inc(completion)

    def key(self, key_name: str, model: str, status: int, prompt: int, completion: int, usd: float) -> None:
        """One request of a client key: its status, tokens and spend."""
        k = (key_name, model, status)
        children = self._keys.get(k)
        if children is None:
            children = self._keys[k] = (
                KEY_REQUESTS.labels(key_name, model, str(status)), KEY_TOKENS.labels(key_name, model, "prompt"),
                KEY_TOKENS.labels(key_name, model, "completion"), KEY_SPEND.labels(key_name, model),
            )  # fmt: skip
        requests, prompt_c, completion_c, spend = children
        requests.inc()
        if prompt:
            prompt_c.inc(prompt)
        if completion:
            completion_c.inc(completion)
        if usd:
            spend.inc(usd)


PROCESS_SAMPLE_INTERVAL = 5.0
_cpu_seen = 0.0


def sample_process() -> None:
    """Refresh this worker's CPU and memory figures (every few seconds, and at scrape time)."""
    global _cpu_seen
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru.ru_utime + ru.ru_stime
    if cpu > _cpu_seen:
        PROCESS_CPU.inc(cpu - _cpu_seen)
        _cpu_seen = cpu
    PROCESS_RSS.set(_rss_bytes())


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric (summed over workers in multiprocess mode)."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Multiprocess mode: drop a dead worker's live gauges."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
