"""Chaos: several deployments failing at random (error statuses, hangs, connection resets, broken
streams) under concurrent load.  Every request must end, within its timeout, in either an answer or a
well-formed error in the client's own format; /metrics must count every request exactly once; and
nothing may be left behind (connections, tasks, requests at the emulators)."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp
import pytest
from aiohttp import web

from tests.proxy.resilience_support import (
    assert_no_leaks,
    chat_body,
    gateway_config,
    messages_body,
    metrics,
    sample,
    start_upstreams,
)

pytestmark = pytest.mark.timeout(60)

REQUESTS = 200
CONCURRENCY = 40
CLIENT_TIMEOUT = 10.0


def chaos(rng: random.Random, rate: float):
    """A fault injector: with probability `rate`, an error status, a hang past the gateway's
    first-byte timeout, or a connection reset before any byte."""

    async def inject(request: web.Request) -> web.StreamResponse | None:
        if rng.random() >= rate:
            return None
        fault = rng.choice(["429", "500", "502", "503", "529", "hang", "reset"])
        if fault == "hang":
            await asyncio.sleep(2.0)  # the gateway gives up after first_byte and closes the connection
            return web.json_response({"error": {"message": "too late"}}, status=500)
        if fault == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        return web.json_response({"error": {"message": "chaos", "type": "server_error", "param": None,
                                            "code": None}}, status=int(fault))

    return inject


def check_answer(path: str, stream: bool, status: int, raw: bytes) -> str:
    """'ok', 'error' (well-formed error response) or 'stream-error' (error event); else fail."""
    if status != 200:
        body = json.loads(raw)
        if path == "/v1/messages":
            assert body["type"] == "error" and body["error"]["type"] and body["error"]["message"]
        else:
            assert body["error"]["message"] and body["error"]["type"]
        return "error"
    if not stream:
        body = json.loads(raw)
        assert body["content"][0]["text"] if path == "/v1/messages" else body["choices"][0]["message"]["content"]
        return "ok"
    text = raw.decode()
    if path == "/v1/messages":
        if "event: message_stop" in text:
            return "ok"
        assert "event: error" in text, text
        return "stream-error"
    if text.rstrip().endswith("data: [DONE]"):
        return "ok"
    last = json.loads(text.rstrip().rsplit("data: ", 1)[1])
    assert last["error"]["message"], text
    return "stream-error"


async def test_random_failures_under_concurrent_load(aiohttp_server, gateway_client, start_proxy):
    rng = random.Random(20240601)
    ups = await start_upstreams(aiohttp_server, "a", "b", "c")
    ups["a"].chaos = chaos(rng, 0.35)
    ups["b"].chaos = chaos(rng, 0.35)
    ups["c"].chaos = chaos(rng, 0.1)
    models = [
        {"name": "m", "strategy": "least-busy", "retries": 2, "fallbacks": ["fb"], "hedge_after": 0.15,
         "deployments": [{"backend": "a", "model": "llama"}, {"backend": "b", "model": "llama", "weight": 2},
                         {"backend": "c", "model": "llama::reset_after=3,chunk_delay=0.01", "max_concurrency": 4,
                          "max_queue": 4}]},
        {"name": "fb", "backend": "c", "model": "fallback", "retries": 1},
    ]
    timeouts = {"connect": 1.0, "first_byte": 0.3, "idle": 1.0, "total": 5.0}
    server = await start_proxy(gateway_config({n: u.url for n, u in ups.items()}, models,
                                              {"breaker_failures": 3, "breaker_cooldown": 0.2}, timeouts))
    client = await gateway_client(server, timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT))
    before = await metrics(client)
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> str:
        path = "/v1/messages" if i % 2 else "/v1/chat/completions"
        stream = i % 3 == 0
        body = messages_body("m", stream) if i % 2 else chat_body("m", stream)
        async with sem:
            resp = await client.post(path, json=body)
            raw = await resp.read()
        return check_answer(path, stream, resp.status, raw)

    outcomes = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(REQUESTS))), 45)
    assert len(outcomes) == REQUESTS
    assert outcomes.count("ok") > REQUESTS // 2  # retries, hedges and fallbacks absorb most faults
    assert sum(u.total for u in ups.values()) > REQUESTS  # faults happened and were retried
    after = await metrics(client)
    counted = sample(after, "llm_proxy_requests_total") - sample(before, "llm_proxy_requests_total")
    assert counted == REQUESTS  # every request counted once, whatever its outcome
    assert sample(after, "llm_proxy_retries_total", model="m") > sample(before, "llm_proxy_retries_total", model="m")
    await assert_no_leaks(server, ups, wait=5.0)
