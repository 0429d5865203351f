"""Per-key limits through the gateway, with the official clients and real stores (an SQLite file and
a real redis-server): refusals in each caller's format with Retry-After and rate-limit headers, TPM
reconciliation, budgets with an injected clock, max_parallel with slow streams, cut streams, store
down (closed and open), metrics, and a config reload that keeps the counters."""

from __future__ import annotations

import asyncio

import aiohttp
import anthropic
import ollama
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors

from proxy.app import GATEWAY, SWITCH
from proxy.config import load_config_dict
from proxy.limiter import rfc3339
from proxy.metrics import exposition
from tests.conftest import proxy_url

pytestmark = pytest.mark.timeout(60)
KEY = "sk-team-0123456789"
FREE = "sk-free-0123456789"
ADMIN = "adm-0123456789"


def config(emu: str, state_url: str, on_error: str = "closed", **limits) -> dict:
    return {
        "state": {"url": state_url, "on_error": on_error, "timeout": 0.3},
        "backends": {
            "emu": {"provider": "openai", "base_url": emu + "/v1", "timeouts": {"total": 20}},
        },
        "models": [
            {"name": "llama", "backend": "emu", "model": "llama::usage_in=7,usage_out=5",
             "price": {"input": 1000.0, "output": 2000.0}},
            {"name": "slow", "backend": "emu", "model": "llama::chunks=6,chunk_delay=0.1"},
            {"name": "long", "backend": "emu", "model": "llama::chunks=200,chunk_delay=0.02"},
        ],
        "auth": {"admin_key": ADMIN, "keys": [FREE, {"key": KEY, "name": "team", **limits}]},
    }  # fmt: skip


@pytest.fixture
async def emu(start_emulator):
    return await start_emulator("openai")


def oa(server, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key=key, max_retries=0)


async def chat(client, model="llama", **kw):
    return await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], **kw)


async def usage_of(server, name="team") -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy_url(server, f"/admin/keys/{name}"), headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 200
            return (await r.json())["usage"]


async def test_rpm_refusal_in_openai_format_with_headers(emu, start_proxy, state_url):
    server = await start_proxy(config(emu, state_url, rpm=3, tpm=100_000))
    client = oa(server)
    for i in range(3):
        raw = await chat(client)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(2 - i)
        assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
        assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 100_000
        assert raw.headers["x-ratelimit-reset-requests"] == "1m0s"
    with pytest.raises(openai.RateLimitError) as info:
        await chat(client)
    err = info.value
    assert err.body["code"] == "rate_limit_exceeded" and "3 requests per minute" in err.body["message"]
    assert 55 <= int(err.response.headers["retry-after"]) <= 60
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    # a key without limits is not affected (and never touches the store)
    assert (await chat(oa(server, FREE))).parse().choices[0].message.content == "echo: hi"
    await client.close()


async def test_refusals_in_anthropic_gemini_ollama_formats(emu, start_proxy, state_url):
    server = await start_proxy(config(emu, state_url, rpm=1))
    client = oa(server)
    await chat(client)
    ac = anthropic.AsyncAnthropic(base_url=proxy_url(server), api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as info:
        await ac.messages.create(model="llama", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["error"]["type"] == "rate_limit_error"
    headers = info.value.response.headers
    assert headers["anthropic-ratelimit-requests-limit"] == "1" and headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["anthropic-ratelimit-requests-reset"].endswith("Z") and "retry-after" in headers
    g = genai.Client(api_key=KEY, http_options={"base_url": proxy_url(server), "timeout": 5000})
    with pytest.raises(genai_errors.ClientError) as ginfo:
        await g.aio.models.generate_content(model="llama", contents="x")
    assert ginfo.value.code == 429 and ginfo.value.status == "RESOURCE_EXHAUSTED"
    ol = ollama.AsyncClient(host=proxy_url(server), headers={"Authorization": f"Bearer {KEY}"})
    with pytest.raises(ollama.ResponseError) as oinfo:
        await ol.chat(model="llama", messages=[{"role": "user", "content": "x"}], stream=False)
    assert oinfo.value.status_code == 429 and "requests per minute" in oinfo.value.error
    await client.close()


async def test_tpm_reconciles_lower_usage(emu, start_proxy, state_url):
    """Each request reserves prompt + max_tokens (~150) but uses 12: the window keeps the real sum."""
    server = await start_proxy(config(emu, state_url, tpm=400))
    client = oa(server)
    for _ in range(6):  # 6 x 150 reserved would exceed 400 without reconciliation
        raw = await chat(client, max_tokens=140)
        assert raw.parse().usage.total_tokens == 12
    assert (await usage_of(server))["tokens"] == 6 * 12
    await client.close()


async def test_tpm_reconciles_higher_usage_and_refuses(emu, start_proxy, state_url):
    cfg = config(emu, state_url, tpm=1000)
    cfg["models"][0]["model"] = "llama::usage_in=100,usage_out=800"
    server = await start_proxy(cfg)
    client = oa(server)
    await chat(client, max_tokens=10)  # reserves ~20, uses 900
    assert (await usage_of(server))["tokens"] == 900
    with pytest.raises(openai.RateLimitError) as info:
        await chat(client, max_tokens=200)
    assert "tokens per minute" in info.value.body["message"]
    assert info.value.response.headers["x-ratelimit-remaining-tokens"] == "100"
    await client.close()


async def test_budget_exhaustion_and_reset_with_injected_clock(emu, start_proxy, state_url):
    # price: 7 prompt tokens x $1000/M + 5 x $2000/M = $0.017 per request; budget $0.03 per 1h
    server = await start_proxy(config(emu, state_url, budget={"usd": 0.03, "period": "1h"}))
    now = [1_900_000_000.0]
    server.app[GATEWAY].limiter.clock = lambda: now[0]
    client = oa(server)
    await chat(client, max_tokens=5)
    await chat(client, max_tokens=5)  # $0.017 spent < $0.03: admitted, then $0.034
    with pytest.raises(openai.RateLimitError) as info:
        await chat(client, max_tokens=5)
    body, headers = info.value.body, info.value.response.headers
    assert body["type"] == "insufficient_quota" and body["code"] == "insufficient_quota"
    assert "$0.03 per 1h" in body["message"] and f"resets at {rfc3339(now[0] + 3600)}" in body["message"]
    assert headers["x-should-retry"] == "false" and int(headers["retry-after"]) == 3600
    usage = await usage_of(server)
    assert usage["spend_usd"] == pytest.approx(0.034) and usage["reserved_usd"] == 0
    ac = anthropic.AsyncAnthropic(base_url=proxy_url(server), api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as ainfo:
        await ac.messages.create(model="llama", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert ainfo.value.body["error"]["type"] == "rate_limit_error"
    now[0] += 3600  # the next period
    assert (await chat(client, max_tokens=5)).parse().choices[0].message.content == "echo: hi"
    await client.close()


async def test_max_parallel_with_slow_streams(emu, start_proxy, state_url):
    server = await start_proxy(config(emu, state_url, max_parallel=2))
    client = oa(server)

    async def stream():
        s = await client.chat.completions.create(model="slow", messages=[{"role": "user", "content": "x"}], stream=True)
        return [c async for c in s]

    first = [asyncio.create_task(stream()) for _ in range(2)]
    await asyncio.sleep(0.2)  # both streams are open (0.6 s each)
    with pytest.raises(openai.RateLimitError) as info:
        await chat(client)
    assert "max_parallel" in info.value.body["message"] and info.value.response.headers["retry-after"] == "1"
    assert all(len(chunks) > 3 for chunks in await asyncio.gather(*first))
    assert (await chat(client)).parse().choices[0].message.content == "echo: hi"
    assert (await usage_of(server))["in_flight"] == 0
    await client.close()


async def test_cut_stream_is_charged_what_was_relayed(emu, start_proxy, state_url):
    server = await start_proxy(config(emu, state_url, tpm=100_000))
    async with aiohttp.ClientSession() as s:
        body = {"model": "long", "stream": True, "max_tokens": 5000, "messages": [{"role": "user", "content": "x"}]}
        async with s.post(proxy_url(server, "/v1/chat/completions"), json=body,
                          headers={"Authorization": f"Bearer {KEY}"}) as r:  # fmt: skip
            seen = 0
            async for _ in r.content:
                seen += 1
                if seen >= 10:
                    break
    for _ in range(100):  # the handler sees the disconnect and settles
        tokens = (await usage_of(server))["tokens"]
        if tokens < 5000:
            break
        await asyncio.sleep(0.05)
    assert 5 <= tokens < 200, tokens  # prompt estimate + one token per chunk relayed, not the 5000 reserved


async def test_store_down_closed_503_in_callers_format_and_free_keys_still_served(emu, start_proxy):
    from tests.redis_support import free_port

    server = await start_proxy(config(emu, f"redis://127.0.0.1:{free_port()}/0", rpm=5))
    with pytest.raises(openai.InternalServerError) as info:
        await chat(oa(server))
    assert info.value.status_code == 503 and "state store is unavailable" in info.value.body["message"]
    ac = anthropic.AsyncAnthropic(base_url=proxy_url(server), api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as ainfo:
        await ac.messages.create(model="llama", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert ainfo.value.body["error"]["type"] == "overloaded_error"
    assert (await chat(oa(server, FREE))).parse().choices[0].message.content == "echo: hi"
    # an unknown key cannot be checked against the run-time keys: 503, never admitted
    with pytest.raises(openai.InternalServerError):
        await chat(oa(server, "sk-unknown"))


async def test_store_down_open_admits(emu, start_proxy, caplog):
    from tests.redis_support import free_port

    server = await start_proxy(config(emu, f"redis://127.0.0.1:{free_port()}/0", on_error="open", rpm=1))
    client = oa(server)
    for _ in range(3):  # rpm 1 cannot be enforced: admitted and logged
        assert (await chat(client)).parse().choices[0].message.content == "echo: hi"
    assert any("state store unavailable" in r.getMessage() for r in caplog.records)
    await client.close()


async def test_store_killed_mid_run(emu, start_proxy, own_redis):
    server = await start_proxy(config(emu, own_redis.url, rpm=100))
    client = oa(server)
    await chat(client)
    own_redis.stop()
    with pytest.raises(openai.InternalServerError) as info:
        await chat(client)
    assert info.value.status_code == 503
    await client.close()


async def test_key_metrics_and_access_log(emu, start_proxy, state_url, monkeypatch):
    import io
    import json

    from proxy.accesslog import ACCESS

    out = io.BytesIO()
    monkeypatch.setattr(ACCESS, "stream", out)
    monkeypatch.setattr(ACCESS, "enabled", True)
    server = await start_proxy(config(emu, state_url, rpm=100))
    await chat(oa(server))
    await chat(oa(server, FREE))
    ACCESS.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["key_name"] for line in lines][-2:] == ["team", "key-" + __import__("hashlib").sha256(FREE.encode()).hexdigest()[:8]]
    assert KEY.encode() not in out.getvalue() and FREE.encode() not in out.getvalue()
    text = exposition()[0].decode()
    assert 'llm_proxy_key_requests_total{key_name="team",model="llama",status="200"}' in text
    assert 'llm_proxy_key_tokens_total{key_name="team",kind="prompt",model="llama"}' in text
    assert 'llm_proxy_key_spend_usd_total{key_name="team",model="llama"}' in text
    free_name = server.app[GATEWAY].keys.config[__import__("hashlib").sha256(FREE.encode()).hexdigest()].name
    assert f'llm_proxy_key_requests_total{{key_name="{free_name}",model="llama",status="200"}}' in text
    assert KEY not in text and FREE not in text


async def test_reload_applies_new_limits_and_keeps_counters(emu, start_proxy, state_url):
    server = await start_proxy(config(emu, state_url, rpm=3))
    client = oa(server)
    await chat(client)
    await chat(client)
    new_cfg = load_config_dict(config(emu, state_url, rpm=4), env={})
    assert await server.app[SWITCH].reload(lambda: new_cfg)
    await chat(client)
    await chat(client)  # 4 in the window now: the two before the reload count
    with pytest.raises(openai.RateLimitError):
        await chat(client)
    await client.close()


async def test_responses_api_refusal_and_stream_headers(emu, start_proxy, state_url):
    server = await start_proxy(config(emu, state_url, rpm=2))
    client = oa(server)
    stream = await client.chat.completions.with_raw_response.create(
        model="slow", messages=[{"role": "user", "content": "x"}], stream=True)
    assert stream.headers["x-ratelimit-remaining-requests"] == "1"  # sent with the stream's headers
    _ = [c async for c in stream.parse()]
    await client.responses.create(model="llama", input="hi")
    with pytest.raises(openai.RateLimitError) as info:
        await client.responses.create(model="llama", input="hi")
    assert info.value.body["code"] == "rate_limit_exceeded"
    await client.close()


# -- the limiter's pieces, row by row ------------------------------------------------------------------

@pytest.mark.parametrize("path, body, expected", [
    ("/v1/chat/completions", {"max_completion_tokens": 50, "max_tokens": 60}, 50),  # newer field first
    ("/v1/chat/completions", {"max_tokens": 60}, 60),
    ("/v1/completions", {"max_tokens": 65}, 65),
    ("/v1/messages", {"max_tokens": 60}, 60),
    ("/v1/responses", {"max_output_tokens": 70}, 70),
    ("/v1/responses", {"max_tokens": 70}, None),  # not the Responses API's field
    ("/api/chat", {"options": {"num_predict": 80}}, 80),
    ("/api/generate", {"options": {"num_predict": 85}}, 85),
    ("/v1beta/models/{target}", {"generationConfig": {"maxOutputTokens": 90}}, 90),
    ("/v1/chat/completions", {"max_tokens": 0}, None), ("/v1/chat/completions", {"max_tokens": True}, None),
    ("/v1/chat/completions", {"max_tokens": "9"}, None), ("/v1/chat/completions", {}, None),
    ("/api/chat", {"options": "x"}, None),
])  # fmt: skip
def test_max_tokens_fields_each_frontend_declares(path, body, expected):
    from adapters import jsonio, registry
    from adapters.base import ApiRoute, ChatOp, InBody
    from proxy.limiter import _max_tokens

    (route,) = [r for name in registry.FRONTENDS for r in registry.frontend(name).routes()
                if isinstance(r, ApiRoute) and r.path == path]
    target = route.target
    op = target.operation if isinstance(target, InBody) else target.operations["generate"]
    assert isinstance(op, ChatOp)
    assert _max_tokens(jsonio.top_level_raw(jsonio.dumps(body)), op.max_tokens_fields) == expected


@pytest.mark.parametrize("usage, outcome, first_write, chunks, expected", [
    ((10, 20), "ok", None, 0, (10, 20)),  # the backend's usage
    ((10, 20), "error", None, 0, (10, 20)),  # a failed attempt that reported usage
    (None, "ok", None, 0, (5, 95)),  # answered without usage: the reservation stays
    (None, "error", None, 0, (0, 0)),  # failed before any answer
    (None, "cut", 1.0, 7, (5, 7)),  # stream cut: prompt estimate + a token per chunk relayed
    ((12, 1), "cut", 1.0, 7, (12, 7)),  # Anthropic-style partial usage: its prompt count wins
    ((12, 30), "ok", 1.0, 7, (12, 30)),  # a finished stream with usage
])  # fmt: skip
def test_charged_tokens(usage, outcome, first_write, chunks, expected):
    from adapters.ir import Usage
    from proxy.context import RequestContext
    from proxy.limiter import charged_tokens

    ctx = RequestContext("r", "/v1/chat/completions")
    ctx.usage = Usage(input_tokens=usage[0], output_tokens=usage[1]) if usage else None
    ctx.first_write, ctx.stream_chunks = first_write, chunks
    assert charged_tokens(ctx, outcome, 5, 100) == expected


@pytest.mark.parametrize("seconds, text", [(0.02, "20ms"), (1, "1s"), (1.5, "1.5s"), (60, "1m0s"), (360, "6m0s")])
def test_reset_durations_in_openai_format(seconds, text):
    from adapters.base import X_RATELIMIT

    assert X_RATELIMIT.reset_value(seconds, 0.0) == text


async def test_one_redis_round_trip_per_phase(emu, start_proxy, redis_url):
    """Admission and reconciliation are one EVALSHA each: Redis counts every command it ran."""
    import redis.asyncio as aioredis

    server = await start_proxy(config(emu, redis_url, rpm=1000, tpm=10**7, max_parallel=50, budget={"usd": 100}))
    client = oa(server)
    await chat(client)  # loads the scripts (EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA: once per process)
    r = aioredis.from_url(redis_url)
    await r.config_resetstat()
    for _ in range(5):
        await chat(client)
    stats = await r.info("commandstats")
    await r.aclose()
    await client.close()
    calls = {name.removeprefix("cmdstat_"): s["calls"] for name, s in stats.items()}
    assert calls.pop("evalsha") == 10  # 5 requests x (admit + settle)
    # everything else Redis counted ran inside those scripts (or is this test's own INFO)
    inside = {"hget", "hset", "hmget", "hdel", "hexists", "exists", "zcard", "zadd", "zrem", "zrange", "zrangebyscore",
              "zremrangebyscore", "pexpire", "config|resetstat", "info"}  # fmt: skip
    assert set(calls) <= inside, calls
