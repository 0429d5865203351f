"""The continuous-batching emulator (loadtest/emulators/batching.py), checked with the official openai
client and prometheus_client's parser: batch slots and the waiting queue, the prefix cache, vLLM
/metrics, and a client going away freeing its slot."""

from __future__ import annotations

import asyncio

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.emulators import batching

pytestmark = pytest.mark.timeout(20)


async def start(aiohttp_server, **profile):
    srv = await aiohttp_server(batching.create_app(batching.EngineProfile(**profile)), host="127.0.0.1")
    client = openai.AsyncOpenAI(base_url=str(srv.make_url("/v1")), api_key="x", max_retries=0)
    return srv, client, srv.app[batching.ENGINE]


async def scrape(srv) -> dict[str, float]:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(str(srv.make_url("/metrics"))) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    out = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


async def test_chat_stream_and_non_stream_with_the_official_client(aiohttp_server):
    srv, client, _ = await start(aiohttp_server)
    resp = await client.chat.completions.create(model=batching.MODEL, max_tokens=3,
                                                messages=[{"role": "user", "content": "hello"}])
    assert resp.choices[0].message.content == " w0 w1 w2" and resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 3 and resp.usage.prompt_tokens >= 1
    stream = await client.chat.completions.create(model=batching.MODEL, max_tokens=4, stream=True,
                                                  stream_options={"include_usage": True},
                                                  messages=[{"role": "user", "content": "hello"}])
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " w0 w1 w2 w3"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 4


async def test_slots_fill_then_requests_wait_and_metrics_say_so(aiohttp_server):
    srv, client, engine = await start(aiohttp_server, slots=2, decode_ms=20.0)
    tasks = [asyncio.ensure_future(client.chat.completions.create(
        model=batching.MODEL, max_tokens=30, messages=[{"role": "user", "content": f"q{i}"}])) for i in range(5)]
    for _ in range(200):
        if len(engine.running) == 2 and len(engine.waiting) == 3:
            break
        await asyncio.sleep(0.01)
    m = await scrape(srv)
    assert m["vllm:num_requests_running"] == 2 and m["vllm:num_requests_waiting"] == 3
    assert 0 < m["vllm:kv_cache_usage_perc"] < 1
    await asyncio.gather(*tasks)
    m = await scrape(srv)
    assert m["vllm:num_requests_running"] == 0 and m["vllm:num_requests_waiting"] == 0
    assert m["vllm:request_success_total"] == 5


async def test_a_shared_prefix_is_found_in_the_cache(aiohttp_server):
    srv, client, engine = await start(aiohttp_server)
    system = "You are a careful assistant. " * 40  # about 1200 characters: 18 blocks of 64
    for q in ("first question", "second question"):
        await client.chat.completions.create(model=batching.MODEL, max_tokens=1, messages=[
            {"role": "system", "content": system}, {"role": "user", "content": q}])
    m = await scrape(srv)
    prompt_tokens = m["vllm:prefix_cache_queries_total"] / 2
    assert m["vllm:prefix_cache_hits_total"] >= 0.8 * prompt_tokens  # the second one's system prompt
    await client.chat.completions.create(model=batching.MODEL, max_tokens=1, messages=[
        {"role": "system", "content": "Another prompt. " * 80}, {"role": "user", "content": "q"}])
    assert (await scrape(srv))["vllm:prefix_cache_hits_total"] == m["vllm:prefix_cache_hits_total"]


def test_lru_evicts_the_oldest_blocks_beyond_capacity():
    engine = batching.Engine(batching.EngineProfile(cache_blocks=4, block_chars=8))
    seq = batching.Seq(batching.prompt_blocks("a" * 8 * 3, 8), 6, 1)
    engine._prefill_ms(seq)
    other = batching.Seq(batching.prompt_blocks("b" * 8 * 3, 8), 6, 1)
    engine._prefill_ms(other)
    assert len(engine.cache) == 4
    engine._prefill_ms(batching.Seq(batching.prompt_blocks("a" * 8 * 3, 8), 6, 1))
    assert engine.hits == 0  # its first block was evicted, and a chain breaks at the first miss


def test_blocks_chain_so_a_later_match_alone_is_no_hit():
    a = batching.prompt_blocks("x" * 64 + "y" * 64, 64)
    b = batching.prompt_blocks("z" * 64 + "y" * 64, 64)
    assert a[1] != b[1] and len(a) == 2 and batching.prompt_blocks("short", 64) == []


async def test_a_client_going_away_frees_its_slot(aiohttp_server):
    srv, client, engine = await start(aiohttp_server, slots=1, decode_ms=20.0)
    stream = await client.chat.completions.create(model=batching.MODEL, max_tokens=500, stream=True,
                                                  messages=[{"role": "user", "content": "long"}])
    async for _ in stream:
        break
    await stream.close()
    for _ in range(200):
        if not engine.running:
            break
        await asyncio.sleep(0.01)
    assert not engine.running
    resp = await client.chat.completions.create(model=batching.MODEL, max_tokens=1,
                                                messages=[{"role": "user", "content": "next"}])
    assert resp.choices[0].message.content == " w0"
