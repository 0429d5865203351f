"""Load points and presets: what a benchmark run measures, bounded in requests and time."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .scenario import PATHS, RESPONSES

DELAY_PROFILES = ("vllm-llama3-8b", "mistral-medium", "together-qwen2.5-32b")


@dataclass(frozen=True)
class LoadPoint:
    profile: str
    path: str
    stream: bool
    mode: str = "closed"  # "closed": fixed concurrency | "open": Poisson arrivals at `rate`
    concurrency: int = 1
    rate: float = 0.0  # open loop, req/s; 0 = half the proxied max measured earlier in the run
    requests: int = 100  # per target per round
    rounds: int = 2  # A B A B ...: each round runs every target once
    deadline: float = 30.0  # seconds per batch
    workers: tuple[int, ...] = ()  # non-empty: compare proxies with these worker counts (throughput)

    @property
    def label(self) -> str:
        load = f"c={self.concurrency}" if self.mode == "closed" else (f"{self.rate:g} req/s" if self.rate else "½ max rate")
        kind = "stream" if self.stream else "non-stream"
        extra = f", workers {'/'.join(map(str, self.workers))}" if self.workers else ""
        return f"{self.mode} {load}, {kind}{extra}"


@dataclass
class Plan:
    name: str
    points: list[LoadPoint]
    open_streams: int = 0  # concurrent streams held open through the proxy (memory)
    soak_seconds: float = 0.0  # constant load, RSS at start / middle / end
    warmup: int = 50  # untimed requests per target before each load point
    key_stores: tuple[str, ...] = ()  # also a proxy whose client key is limited, per state store
    state_cost_requests: int = 3000  # then the store's own admit + settle cost, timed in the harness
    # Responses API points: per state store, a proxy storing answers (`store: true`) and continuing
    # them in `previous_response_id` chains of at most `chain_length` turns.
    response_stores: tuple[str, ...] = ()
    chain_length: int = 4
    extras: dict = field(default_factory=dict)

    def profiles(self) -> list[str]:
        names = {p.profile for p in self.points} | {"zero"}  # zero: soak and the hot-path profile
        if self.open_streams:
            names.add("fixed-50ms")
        return sorted(names)

    def max_workers(self) -> int:
        return max((max(p.workers) for p in self.points if p.workers), default=1)


def _latency_points(requests: int, rounds: int, stream_requests: int) -> list[LoadPoint]:
    """The zero-delay profile on every path at concurrency 1: the proxy's own added latency."""
    return [
        LoadPoint("zero", path, stream, requests=stream_requests if stream else requests, rounds=rounds)
        for path in PATHS
        for stream in (False, True)
    ]


def full() -> Plan:
    points = _latency_points(500, 4, 250)
    for path in PATHS:
        points.append(LoadPoint("zero", path, False, concurrency=32, requests=3000, rounds=2))
    for path in ("openai->openai", "openai->anthropic"):
        points.append(LoadPoint("zero", path, True, concurrency=32, requests=1000, rounds=2))
    for path in PATHS:
        points.append(LoadPoint("zero", path, False, mode="open", requests=3000, rounds=2, deadline=15))
    points.append(LoadPoint("zero", "openai->openai", True, mode="open", requests=1000, rounds=2, deadline=15))
    for profile in DELAY_PROFILES:
        for path in ("openai->openai", "openai->anthropic"):
            for stream in (False, True):
                points.append(LoadPoint(profile, path, stream, concurrency=32, requests=128, rounds=2, deadline=60))
    for path in ("openai->openai", "openai->anthropic"):
        points.append(LoadPoint("zero", path, False, concurrency=64, requests=4000, rounds=2, workers=(1, 2)))
    points += responses().points
    return Plan("full", points, open_streams=1000, soak_seconds=30.0, warmup=100, response_stores=("sqlite", "redis"))


def smoke() -> Plan:
    """Every code path of the harness in well under a minute (the CI test runs this)."""
    points = [replace(p, deadline=5) for p in _latency_points(20, 2, 10)]
    points += [
        LoadPoint("zero", "openai->openai", False, concurrency=8, requests=100, rounds=1, deadline=5),
        LoadPoint("zero", "openai->openai", False, mode="open", requests=60, rounds=1, deadline=3),
        LoadPoint("vllm-llama3-8b", "openai->openai", False, concurrency=4, requests=8, rounds=1, deadline=5),
        LoadPoint("zero", "openai->anthropic", False, concurrency=8, requests=60, rounds=1, deadline=5, workers=(1, 2)),
    ]
    return Plan("smoke", points, open_streams=20, soak_seconds=1.0, warmup=5, key_stores=("sqlite", "redis"),
                state_cost_requests=200)


def keys() -> Plan:
    """The cost of a limited key: admission + reconciliation in SQLite and in Redis, at concurrency 1,
    against the same proxy serving a key without limits (interleaved)."""
    points = [LoadPoint("zero", path, stream, requests=250 if stream else 500, rounds=4)
              for path in ("openai->openai", "openai->anthropic") for stream in (False, True)]  # fmt: skip
    return Plan("keys", points, warmup=100, key_stores=("sqlite", "redis"))


def responses() -> Plan:
    """The cost of stored responses: the Responses API frontend with `store: false` (the proxy),
    `store: true` and `previous_response_id` chains, per state store, at concurrency 1, interleaved."""
    points = [LoadPoint("zero", RESPONSES.name, stream, requests=200 if stream else 400, rounds=4, deadline=20)
              for stream in (False, True)]  # fmt: skip
    return Plan("responses", points, warmup=50, response_stores=("sqlite", "redis"))


def hop() -> Plan:
    """What `--compare-hop minimal` reports (issue 16): latency at concurrency 1, throughput at 32 (JSON
    and streams), CPU per relayed chunk on paced 128-chunk streams, 1,000 open streams and a soak
    (20 s by default; `--soak 600` for the published figure)."""
    points = _latency_points(300, 4, 150)
    points += [LoadPoint("zero", path, stream, concurrency=32, requests=500 if stream else 2000, rounds=2)
               for path in PATHS for stream in (False, True)]  # fmt: skip
    points += [LoadPoint("relay", path, True, concurrency=8, requests=64, rounds=2) for path in PATHS]
    return Plan("hop", points, open_streams=1000, soak_seconds=20.0, warmup=50)


def isolated(seconds: int = 5, rounds: int = 3, requests: int = 300) -> Plan:
    """Issue 16's setup (`--isolated`, run by isolated.py): each path at concurrency 1 (`requests`
    JSON / half as many streams x 4 interleaved rounds: added latency) and at concurrency 32 under
    `wrk` (`rounds` rounds of `seconds` s per target: throughput), JSON and stream."""
    points = [LoadPoint("zero", path, stream, requests=max(1, requests // 2) if stream else requests, rounds=4)
              for path in PATHS for stream in (False, True)]  # fmt: skip
    points += [LoadPoint("zero", path, stream, concurrency=32, rounds=rounds, deadline=seconds)
               for path in PATHS for stream in (False, True)]  # fmt: skip
    return Plan("isolated", points, warmup=50)


PRESETS = {"full": full, "smoke": smoke, "keys": keys, "hop": hop, "responses": responses}
