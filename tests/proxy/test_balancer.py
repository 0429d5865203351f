"""Balancer and breaker state is kept per configured deployment: the names a client makes up on a
wildcard add none, so memory stays bounded and /health/ready (no key needed) names no client text."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from proxy.app import SWITCH
from proxy.config import RoutingConfig, load_config_dict
from proxy.dispatch import Dispatcher
from proxy.pools import build_backends
from proxy.routing import Router
from tests.conftest import proxy_url


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def test_state_is_per_configured_deployment():
    cfg = load_config_dict({"backends": {"oa": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                            "models": [{"name": "oa-*", "strategy": "round-robin",
                                        "deployments": [{"backend": "oa", "weight": 2}, {"backend": "oa", "model": "x-*"}]}]})
    router = Router(cfg, build_backends(cfg))
    dispatcher = Dispatcher(router, RoutingConfig(), ["oa"])
    for i in range(5000):
        route = router.resolve(f"oa-{i}")
        slot = await dispatcher.balancer.acquire(route, [], 1.0)
        slot.close(None)
    assert set(dispatcher.balancer.states) == {"oa/*", "oa/x-*"}
    assert set(dispatcher.balancer.board.breakers) == {"oa/*", "oa/x-*"}
    assert len(dispatcher.balancer._rr) == 1
    report = json.dumps(dispatcher.health())
    assert "oa-1" not in report and "oa/1" not in report


async def test_memory_bounded_after_many_distinct_names(start_emulator, start_proxy):
    """Before: 300 names of 300 KB on `oa/*` raised RSS by 280 MiB for good, and /health/ready then
    returned 90 MB listing every one."""
    url = await start_emulator("openai")
    server = await start_proxy({"backends": {"oa": {"provider": "openai", "base_url": url + "/v1"}},
                                "models": [{"name": "oa-*", "backend": "oa"}]})
    msgs = [{"role": "user", "content": "hi"}]
    sem = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as s:

        async def send(model: str) -> int:
            async with sem, s.post(proxy_url(server, "/v1/chat/completions"), json={"model": model, "messages": msgs}) as r:
                await r.read()
                return r.status

        async def batch(tag: str) -> set[int]:
            huge = await asyncio.gather(*(send(f"oa-{tag}{i}-" + "x" * 300_000) for i in range(100)))
            many = await asyncio.gather(*(send(f"oa-{tag}{i}-" + "y" * 200) for i in range(1000)))
            return set(huge) | set(many)

        # The first batch reaches the allocator's high-water mark for this concurrency; a second one
        # of new names must not add to it (before: each 300 KB name stayed, several times over).
        first = await batch("a")
        before = _rss_bytes()
        second = await batch("b")
        grown = _rss_bytes() - before
        async with s.get(proxy_url(server, "/health/ready")) as r:
            ready = await r.text()
    assert first == second == {400, 200}
    assert grown < 12 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB"
    gw = server.app[SWITCH].current
    assert len(gw.dispatcher.balancer.states) == 1 and len(gw.dispatcher.balancer.board.breakers) == 1
    assert len(ready) < 1000 and "yyy" not in ready and "oa-1" not in ready
