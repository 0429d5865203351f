"""What a model server says about its own load: queue, running batch and KV-cache use, scraped in
the background.

How this works.  A backend with a `load:` block gets one `ServerLoad`.  Once the app runs, its task
scrapes `load.metrics_url` every `interval` seconds (one request at a time, `timeout` as deadline,
at most MAX_SCRAPE_BYTES read) and keeps the last good reading of three signals: requests waiting
for a batch slot, requests running, and the fraction of the KV cache in use.  Which gauges hold them
is the adapter's knowledge (`Backend.load_metrics`: vLLM, SGLang, TGI, llama.cpp), overridable per
backend with `load.metrics`; several series of one gauge (data-parallel engines, models) are summed,
the KV-cache fraction is averaged.

A request never waits for a scrape.  `estimate()` reads the last reading and corrects it by what
this gateway did since: each reading remembers how many of our requests were in flight on the
server when it arrived, and the difference to now is added (requests sent since) or taken off
(requests finished since); it never counts fewer requests than we have in flight there.  They fill
the batch up to the server's capacity (`load.capacity` when configured; else the largest running
count read, once a queue was seen in two readings in a row, unknown until then), the rest wait.
A reading older than STALE_INTERVALS intervals (plus the timeout), or none at all, falls back to
our own in-flight count (all of it `running`), which is exactly what least-busy balances on.  A failing scrape is logged once, shown in /health/ready and
`llm_proxy_backend_load{signal="stale"}`, and never fails readiness.  A scrape that works again after
failing (a restarted server) lets the balancer probe a deployment its circuit breaker ejected without
waiting for the whole cooldown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from time import monotonic
from typing import NamedTuple

import aiohttp

from adapters.base import LoadMetricNames

from .config import LoadConfig
from .metrics import BACKEND_LOAD
from .promtext import read_samples

log = logging.getLogger("llm_proxy")

MAX_SCRAPE_BYTES = 4 * 1024 * 1024  # a vLLM page with many models and histograms is well under 1 MiB
STALE_INTERVALS = 3  # missed scrapes before routing stops trusting the last reading
ACCEPT = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"  # the classic text format, not protobuf
BACKGROUND_TASK = "llm-proxy-background:load-scrape:"  # the prefix proxy.app gives background tasks


class ScrapeError(Exception):
    """Why one scrape gave no reading; the text is safe to show (never the URL)."""


class Load(NamedTuple):
    waiting: float
    running: float
    kv_cache: float  # 0..1; 0 when unknown
    fresh: bool  # from the server's own gauges (else: this gateway's in-flight count)


class Reading(NamedTuple):
    waiting: float
    running: float
    kv_cache: float | None
    at: float  # monotonic() when it arrived
    inflight_at: int  # our requests in flight on the server then


def signal_names(known: LoadMetricNames | None, cfg: LoadConfig) -> LoadMetricNames:
    """The adapter's gauge names, each signal replaced by the one `load.metrics` names, if any."""
    known = known or LoadMetricNames()
    override = cfg.metrics
    if override is None:
        return known
    return LoadMetricNames(
        waiting=(override.waiting,) if override.waiting else known.waiting,
        running=(override.running,) if override.running else known.running,
        kv_cache=(override.kv_cache,) if override.kv_cache else known.kv_cache,
    )


def reading_from(body: bytes, names: LoadMetricNames) -> tuple[float | None, float | None, float | None]:
    """(waiting, running, kv_cache) from a metrics page; None for a signal the page does not hold."""
    samples = read_samples(body, (*names.waiting, *names.running, *names.kv_cache))

    def first(candidates: tuple[str, ...]) -> list[float] | None:
        return next((samples[n] for n in candidates if n in samples), None)

    waiting, running, kv = first(names.waiting), first(names.running), first(names.kv_cache)
    return (
        None if waiting is None else max(0.0, sum(waiting)),
        None if running is None else max(0.0, sum(running)),
        None if kv is None else min(1.0, max(0.0, sum(kv) / len(kv))),
    )


class ServerLoad:
    """One model server's load: the scraper task, its last reading, our requests in flight there."""

    def __init__(self, backend: str, cfg: LoadConfig, names: LoadMetricNames) -> None:
        self.backend = backend
        self.cfg = cfg
        self.names = names
        self.stale_after = STALE_INTERVALS * cfg.interval + cfg.timeout
        self.inflight = 0  # maintained by the balancer (slot taken / closed)
        # Requests it runs at once: `load.capacity` when configured, else learned from its gauges.
        self.capacity: float | None = None if cfg.capacity is None else float(cfg.capacity)
        self._queued = False  # the last reading showed a queue
        self._largest = 0.0  # the largest running count read so far
        self.reading: Reading | None = None
        self.failures = 0  # consecutive failed scrapes
        self.error: str | None = None  # why the last scrape failed
        self.back_at: float | None = None  # when a scrape last worked again after failing
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._gauges = {s: BACKEND_LOAD.labels(backend, s) for s in ("waiting", "running", "kv_cache", "stale")}
        self._gauges["stale"].set(1)

    # -- estimate (per routing decision: no I/O, no allocation beyond the tuple) ------------------------
    def estimate(self, now: float, capacity: float | None = None) -> Load:
        """The load now; `capacity` stands in for the server's own while it is unknown."""
        r = self.reading
        mine = self.inflight
        if r is None or now - r.at > self.stale_after:
            return Load(0.0, float(mine), 0.0, False)
        # Our requests sent (or finished) since the reading fill (or free) the batch first, then the queue.
        total = max(float(mine), r.waiting + r.running + mine - r.inflight_at)
        cap = self.capacity or capacity
        if cap is None and r.waiting > 0:
            cap = r.running  # it queues: its batch is full
        running = total if cap is None else min(total, max(cap, r.running))
        return Load(total - running, running, r.kv_cache or 0.0, True)

    # -- the scraper -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start scraping (inside the running event loop: the app's start-up)."""
        if self._task is not None:
            return
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=("User-Agent",),
        )
        self._task = asyncio.get_running_loop().create_task(self._run(), name=BACKGROUND_TASK + self.backend)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            started = monotonic()
            assert self._session is not None
            await self.scrape_once(self._session)
            self._gauges["stale"].set(0 if self.estimate(monotonic()).fresh else 1)
            await asyncio.sleep(max(0.0, started + self.cfg.interval - monotonic()))

    async def scrape_once(self, session: aiohttp.ClientSession) -> bool:
        """One scrape; True when it gave a reading.  Never raises (except cancellation)."""
        try:
            async with asyncio.timeout(self.cfg.timeout):
                body = await self._fetch(session)
            waiting, running, kv = reading_from(body, self.names)
            if waiting is None and running is None:
                raise ScrapeError("no load gauges in the page (set load.metrics)")
        except (ScrapeError, TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            self._failed(_describe(exc))
            return False
        self.reading = Reading(waiting or 0.0, running or 0.0, kv, monotonic(), self.inflight)
        # Unless configured: a server never runs more than its batch capacity, so the largest batch
        # seen is a floor of it; it becomes the capacity once the server was seen queueing (in two
        # readings in a row: a request that arrived since its last step waits even with a slot free).
        self._largest = max(self._largest, running or 0.0)
        if self.cfg.capacity is None and (self.capacity is not None or (waiting and self._queued)):
            self.capacity = self._largest
        self._queued = bool(waiting)
        if self.failures:
            log.info("load scrape of backend %s works again", self.backend)
            self.back_at = self.reading.at
        self.failures, self.error = 0, None
        self._gauges["waiting"].set(self.reading.waiting)
        self._gauges["running"].set(self.reading.running)
        if kv is not None:
            self._gauges["kv_cache"].set(kv)
        return True

    async def _fetch(self, session: aiohttp.ClientSession) -> bytes:
        async with session.get(self.cfg.metrics_url, allow_redirects=False, headers={"Accept": ACCEPT}) as resp:
            if resp.status != 200:
                raise ScrapeError(f"HTTP {resp.status}")
            if (resp.content_length or 0) > MAX_SCRAPE_BYTES:
                raise ScrapeError(f"page larger than {MAX_SCRAPE_BYTES} bytes")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > MAX_SCRAPE_BYTES:
                    raise ScrapeError(f"page larger than {MAX_SCRAPE_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)

    def _failed(self, why: str) -> None:
        if not self.failures:
            log.warning("load scrape of backend %s failed (%s); routing falls back to in-flight counts once "
                        "the last reading is %.1fs old", self.backend, why, self.stale_after)
        self.failures += 1
        self.error = why

    # -- /health/ready -----------------------------------------------------------------------------------
    def report(self, now: float | None = None) -> dict:
        now = monotonic() if now is None else now
        est = self.estimate(now)
        r = self.reading
        out: dict = {
            "state": "fresh" if est.fresh else ("starting" if r is None and not self.failures else "stale"),
            "waiting": est.waiting, "running": est.running,
            "kv_cache": r.kv_cache if est.fresh and r is not None else None,
            "age_seconds": None if r is None else round(now - r.at, 3),
            "capacity": None if self.capacity is None else round(self.capacity, 1),
            "consecutive_failures": self.failures,
        }  # fmt: skip
        if self.error:
            out["error"] = self.error
        return out


def _describe(exc: BaseException) -> str:
    """A scrape failure in words that hold no URL (aiohttp's messages name the host)."""
    if isinstance(exc, ScrapeError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return "connection failed"
    return f"unreadable answer ({type(exc).__name__})"
