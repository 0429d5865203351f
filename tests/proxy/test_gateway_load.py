"""Gateway tests of load-aware routing against emulated continuous-batching servers that expose vLLM
/metrics: background scrapes, /health/ready and llm_proxy_backend_load, the in-flight fallback when a
scrape fails, load-aware choice, and prefix affinity through the official openai client."""

from __future__ import annotations

import asyncio
import collections

import openai
import pytest

from loadtest.emulators import batching
from proxy.app import SWITCH
from tests.proxy.resilience_support import closed_port_url, metrics, sample

pytestmark = pytest.mark.timeout(30)

TIMEOUTS = {"connect": 1.0, "first_byte": 5.0, "idle": 5.0, "total": 10.0}


async def start_servers(aiohttp_server, *profiles: batching.EngineProfile):
    servers = []
    for p in profiles:
        srv = await aiohttp_server(batching.create_app(p), host="127.0.0.1")
        servers.append(srv)
    return servers


def config(urls: list[str], metrics_urls: list[str], strategy: str = "load-aware", **model) -> dict:
    backends = {
        f"s{i}": {"provider": "openai", "preset": "vllm", "base_url": url + "/v1", "timeouts": TIMEOUTS,
                  "load": {"metrics_url": murl, "interval": 0.05, "timeout": 0.5}}
        for i, (url, murl) in enumerate(zip(urls, metrics_urls))
    }
    return {"backends": backends,
            "models": [{"name": "m", "deployments": [{"backend": b, "model": batching.MODEL} for b in backends],
                        "strategy": strategy, **model}]}


def url(srv) -> str:
    return str(srv.make_url("")).rstrip("/")


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def where_answered(server, n: int) -> collections.Counter:
    """Send `n` chats one after the other with the openai client; which backend answered each."""
    oc = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0)
    seen: collections.Counter = collections.Counter()
    for _ in range(n):
        raw = await oc.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert raw.parse().choices[0].message.content
        seen[raw.headers["x-llm-proxy-deployment"].split("/")[0]] += 1
    return seen


async def ready(client) -> dict:
    resp = await client.get("/health/ready")
    body = await resp.json()
    assert resp.status == 200, body
    return body


async def test_scrapes_show_in_readiness_and_metrics(aiohttp_server, gateway_client, start_proxy):
    a, b = await start_servers(aiohttp_server, batching.EngineProfile(), batching.EngineProfile())
    server = await start_proxy(config([url(a), url(b)], [url(a) + "/metrics", closed_port_url() + "/metrics"]))
    client = await gateway_client(server)
    gw = server.app[SWITCH].current
    await wait_for(lambda: gw.backends["s0"].load.reading is not None and gw.backends["s1"].load.failures > 0)
    body = await ready(client)  # a failing scrape never fails readiness
    s0, s1 = body["backends"]["s0"]["load"], body["backends"]["s1"]["load"]
    assert s0["state"] == "fresh" and s0["waiting"] == 0 and s0["kv_cache"] == 0 and "error" not in s0
    assert s1["state"] == "stale" and s1["error"] == "connection failed" and s1["consecutive_failures"] >= 1
    assert "127.0.0.1" not in str(body)  # no backend address in a response
    snap = await metrics(client)
    assert sample(snap, "llm_proxy_backend_load", backend="s0", signal="stale") == 0
    assert sample(snap, "llm_proxy_backend_load", backend="s1", signal="stale") == 1
    # The stale server still takes traffic: routing falls back to in-flight counts.
    assert set(await where_answered(server, 6)) == {"s0", "s1"}


async def test_load_aware_avoids_the_server_with_a_queue(aiohttp_server, gateway_client, start_proxy):
    # s0 has one slot and slow decoding: one long request fills it and the rest queue there.
    slow = batching.EngineProfile(slots=1, decode_ms=20.0)
    a, b = await start_servers(aiohttp_server, slow, batching.EngineProfile(slots=8))
    server = await start_proxy(config([url(a), url(b)], [url(a) + "/metrics", url(b) + "/metrics"]))
    client = await gateway_client(server)
    engine_a = a.app[batching.ENGINE]
    # Another gateway replica's traffic (not ours) queues on s0.
    hogs = [asyncio.ensure_future(_raw_chat(url(a), 40)) for _ in range(3)]
    gw = server.app[SWITCH].current
    await wait_for(lambda: (r := gw.backends["s0"].load.reading) is not None and r.waiting >= 2)
    seen = await where_answered(server, 8)
    assert seen == {"s1": 8}, seen
    assert engine_a.waiting  # the queue was really there while we routed around it
    for h in hogs:
        h.cancel()
    await asyncio.gather(*hogs, return_exceptions=True)


async def _raw_chat(base: str, max_tokens: int) -> None:
    oc = openai.AsyncOpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
    await oc.chat.completions.create(model=batching.MODEL, messages=[{"role": "user", "content": "hog"}],
                                     max_tokens=max_tokens)


@pytest.mark.parametrize("strategy", ["round-robin", "load-aware"])
async def test_prefix_affinity_keeps_a_prefix_on_one_server(aiohttp_server, gateway_client, start_proxy, strategy):
    servers = await start_servers(aiohttp_server, *(batching.EngineProfile() for _ in range(3)))
    cfg = config([url(s) for s in servers], [url(s) + "/metrics" for s in servers], strategy,
                 prefix_affinity={"chars": 256, "max_imbalance": 1.25})
    server = await start_proxy(cfg)
    client = await gateway_client(server)
    before = await metrics(client)
    oc = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0)
    where: dict[int, set[str]] = collections.defaultdict(set)
    for i in range(24):  # one at a time: nothing in flight, so no server is ever over its share
        system = f"You are assistant number {i % 4}. " * 20
        raw = await oc.chat.completions.with_raw_response.create(
            model="m", stream=True, max_tokens=2,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": f"question {i}"}])
        chunks = [c async for c in raw.parse()]
        assert chunks[0].choices[0].delta.content
        where[i % 4].add(raw.headers["x-llm-proxy-deployment"])
    assert all(len(s) == 1 for s in where.values()), where
    after = await metrics(client)
    assert sample(after, "llm_proxy_prefix_affinity_total", result="hit") - sample(
        before, "llm_proxy_prefix_affinity_total", result="hit") == 24
    hits = sum(s.app[batching.ENGINE].hits for s in servers)
    assert hits > 0  # the emulators' prefix caches were reused

