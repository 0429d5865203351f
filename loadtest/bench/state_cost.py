"""The state store's own cost per limited request: `admit` then `settle` against the real store (the
SQLite file / Redis server the limited-key proxy uses, under a key name of its own), timed in this
process, one request at a time.  This isolates what a limited key adds from everything else a proxy
does; the end-to-end figure is the limited-key proxy's row in the load points."""

from __future__ import annotations

import asyncio
import os
import time

from proxy.state.base import Ask, Done, open_store

from .stats import Summary


async def measure(url: str, requests: int = 3000, warmup: int = 300) -> dict:
    store = open_store(url, 2.0)
    admit: list[float] = []
    settle: list[float] = []
    tag = os.urandom(4).hex()
    try:
        for i in range(requests + warmup):
            ask = Ask(name=f"bench-cost-{tag}", tokens=160, cost=0.0002, rpm=10**9, tpm=10**12, max_parallel=10**6,
                      budget=10.0**9, period=86400.0, lease=f"{tag}-{i}")  # fmt: skip
            t0 = time.perf_counter()
            d = await store.admit(ask, time.time())
            t1 = time.perf_counter()
            await store.settle(Done(ask.name, d.lease, 160, 120, 0.0002, 0.00015, 86400.0), time.time())
            t2 = time.perf_counter()
            if i >= warmup:
                admit.append(t1 - t0)
                settle.append(t2 - t1)
            if i % 64 == 0:
                await asyncio.sleep(0)  # let a checkpoint or other loop work run, as in a server
    finally:
        await store.close()
    both = [a + s for a, s in zip(admit, settle)]
    return {name: {k: round(v, 4) for k, v in Summary.of(xs).ms().items()}
            for name, xs in (("admit", admit), ("settle", settle), ("admit+settle", both))}  # fmt: skip
