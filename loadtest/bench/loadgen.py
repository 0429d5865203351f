"""The load generator: closed loop at a fixed concurrency and open loop at a Poisson arrival rate,
both bounded by a request count and a deadline.

It uses one aiohttp ClientSession with a keep-alive pool (the client overhead is part of every
target's latency alike -- native, proxied and bare hop -- so it cancels in the added-latency column;
its size is the native zero-delay latency).  Streams are read chunk by chunk: the time to first token
is when the first chunk carrying content text arrives, and the events received are counted so the
proxy's CPU time can be divided per relayed chunk.
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass, field
from time import perf_counter

import aiohttp

# The first content text of a stream, per wire format the client receives.
TOKEN_MARKERS = {
    "openai": re.compile(rb'"content":\s*"[^"]'),
    "anthropic": re.compile(rb'"text_delta"'),
    "ollama": re.compile(rb'"content":\s*"[^"]'),
    "responses": re.compile(rb'"response\.output_text\.delta"'),
}
# What ends one stream event: SSE events end with a blank line, NDJSON objects with a newline.
EVENT_ENDS = {"openai": b"\n\n", "anthropic": b"\n\n", "ollama": b"\n", "responses": b"\n\n"}
# A Responses API answer's id: the first `resp_` id of the JSON object or of the stream (response.created).
RESPONSE_ID = re.compile(rb'"id":\s*"(resp_[A-Za-z0-9_-]{1,200})"')


@dataclass(frozen=True)
class Endpoint:
    """One way to send the benchmark request: where, what bytes, and the format of the answer."""

    url: str
    body: bytes
    headers: dict[str, str]
    stream: bool
    fmt: str
    chain: int = 0  # > 0: Responses API, each request continues the previous answer, at most `chain` turns


class Chain:
    """One sender's `previous_response_id` chain: each request continues the last answer seen, and
    after `length` continuations (or an answer without an id) the next starts afresh, so the history
    the gateway reads and sends upstream stays bounded."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.turns = 0
        self.last: bytes | None = None

    def body(self, base: bytes) -> bytes:
        """`base` (a JSON object) with the previous answer's id added, or as is to start a chain."""
        if self.last is None or self.turns >= self.length:
            self.last, self.turns = None, 0
            return base
        self.turns += 1
        return base[:-1] + (b"," if base[:-1].strip() != b"{" else b"") + b'"previous_response_id":"' + self.last + b'"}'

    def saw(self, data: bytes) -> bool:
        """Take the answer's id from (the start of) its bytes; True once found."""
        m = RESPONSE_ID.search(data)
        self.last = m.group(1) if m else None
        return m is not None


@dataclass
class Batch:
    """What one target did in one bounded run."""

    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: int = 0
    events: int = 0  # stream events received (chunks relayed)
    wall: float = 0.0
    error_samples: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    def extend(self, other: "Batch") -> None:
        self.latencies += other.latencies
        self.ttfts += other.ttfts
        self.errors += other.errors
        self.events += other.events
        self.wall += other.wall
        self.error_samples = (self.error_samples + other.error_samples)[:5]


def new_session(max_connections: int = 4096) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120), skip_auto_headers=("User-Agent",))


async def request_once(session: aiohttp.ClientSession, ep: Endpoint, t0: float, batch: Batch,
                       chain: Chain | None = None) -> None:  # fmt: skip
    """One request; latency measured from `t0` (the intended start in an open loop) to the last byte.
    With a `chain`, the body continues its last answer and the answer's id is kept for the next."""
    data = chain.body(ep.body) if chain is not None else ep.body
    try:
        async with session.post(ep.url, data=data, headers=ep.headers) as r:
            if r.status != 200:
                text = (await r.read())[:200]
                raise RuntimeError(f"HTTP {r.status}: {text!r}")
            if not ep.stream:
                answer = await r.read()
                batch.latencies.append(perf_counter() - t0)
                if chain is not None:
                    chain.saw(answer[:4096])
                return
            marker, end = TOKEN_MARKERS[ep.fmt], EVENT_ENDS[ep.fmt]
            ttft, tail, events = None, b"", 0
            want_id = chain is not None
            async for chunk in r.content.iter_any():
                if ttft is None:
                    # Keep a little of the previous chunk: the marker may straddle two reads.
                    if marker.search(tail + chunk):
                        ttft = perf_counter() - t0
                    tail = chunk[-32:]
                if want_id:  # the id is in the first event (response.created)
                    want_id = not chain.saw(chunk[:4096])
                events += chunk.count(end)
            batch.latencies.append(perf_counter() - t0)
            batch.events += events
            if ttft is not None:
                batch.ttfts.append(ttft)
    except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError) as exc:
        batch.errors += 1
        if len(batch.error_samples) < 5:
            batch.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])


async def closed_loop(session: aiohttp.ClientSession, ep: Endpoint, concurrency: int, requests: int,
                      deadline: float) -> Batch:  # fmt: skip
    """`concurrency` workers send back to back until `requests` were sent or `deadline` seconds passed."""
    batch = Batch()
    issued = 0
    start = perf_counter()
    stop_at = start + deadline

    async def worker() -> None:
        nonlocal issued
        chain = Chain(ep.chain) if ep.chain else None  # one chain per sender
        while issued < requests and perf_counter() < stop_at:
            issued += 1
            await request_once(session, ep, perf_counter(), batch, chain)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    batch.wall = perf_counter() - start
    return batch


def arrival_times(rate: float, requests: int, horizon: float, rng: random.Random) -> list[float]:
    """Poisson arrivals: exponential gaps of mean 1/rate, at most `requests`, none after `horizon`."""
    out, t = [], 0.0
    while len(out) < requests:
        t += rng.expovariate(rate)
        if t > horizon:
            break
        out.append(t)
    return out


async def open_loop(session: aiohttp.ClientSession, ep: Endpoint, rate: float, requests: int, deadline: float,
                    rng: random.Random, max_in_flight: int = 4096) -> Batch:  # fmt: skip
    """Requests start at Poisson arrival times whatever the answers do (no coordinated omission:
    latency counts from the scheduled start).  Arrivals past `deadline`, or beyond `max_in_flight`
    outstanding, are not sent; the run then waits at most `deadline` more for the stragglers."""
    batch = Batch()
    start = perf_counter()
    tasks: set[asyncio.Task] = set()
    chain = Chain(ep.chain) if ep.chain else None  # arrivals continue the last answer seen
    for at in arrival_times(rate, requests, deadline, rng):
        delay = start + at - perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= max_in_flight:
            batch.errors += 1
            continue
        task = asyncio.create_task(request_once(session, ep, start + at, batch, chain))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=deadline)
        for task in pending:
            task.cancel()
        batch.errors += len(pending)
    batch.wall = perf_counter() - start
    return batch
