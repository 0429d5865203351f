"""The official `openai` SDK through the gateway to the OpenAI-compatible emulator (pass-through path),
plus the gateway's own behaviour: errors in the caller's format, limits, headers, metrics, disconnects."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest

from proxy.app import GATEWAY
from tests.conftest import proxy_url


def config(emu: str, **server) -> dict:
    return {
        "server": {"max_body_bytes": 64 * 1024, **server},
        "backends": {
            "emu": {"provider": "openai", "base_url": emu + "/v1", "timeouts": {"first_byte": 2, "idle": 1, "total": 5}},
            "dead": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "timeouts": {"connect": 1}},
        },
        "models": [
            {"name": "llama", "backend": "emu", "model": "llama-3.1-8b"},
            {"name": "tools", "backend": "emu", "model": "llama::tools,chunks=6"},
            {"name": "limited", "backend": "emu", "model": "llama::status=429,retry_after=3"},
            {"name": "broken", "backend": "emu", "model": "llama::status=500"},
            {"name": "slow", "backend": "emu", "model": "llama::first_byte=4"},
            {"name": "hang", "backend": "emu", "model": "llama::hang"},
            {"name": "reset", "backend": "emu", "model": "llama::chunks=8,reset_after=3"},
            {"name": "unreachable", "backend": "dead"},
            {"name": "garbled", "backend": "emu", "model": "llama::malformed"},
            {"name": "slowish", "backend": "emu", "model": "llama::first_byte=0.3,chunks=3,chunk_delay=0.05"},
            {"name": "together/*", "backend": "emu"},
        ],
    }


@pytest.fixture
async def gateway(start_emulator, start_proxy):
    emu = await start_emulator("openai")
    server = await start_proxy(config(emu))
    client = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="k", max_retries=0)
    yield server, client
    await client.close()


async def test_chat_non_streaming(gateway):
    _, client = gateway
    raw = await client.chat.completions.with_raw_response.create(
        model="llama", messages=[{"role": "user", "content": "hello there"}]
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == "echo: hello there"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert raw.headers["x-request-id"].startswith("req_")
    assert "proxy;dur=" in raw.headers["server-timing"] and "upstream;dur=" in raw.headers["server-timing"]
    assert raw.headers["x-llm-proxy-deployment"] == "emu/llama-3.1-8b"


async def test_client_request_id_is_kept(gateway):
    _, client = gateway
    raw = await client.chat.completions.with_raw_response.create(
        model="llama", messages=[{"role": "user", "content": "x"}], extra_headers={"x-request-id": "abc-123"}
    )
    assert raw.headers["x-request-id"] == "abc-123"
    long = await client.chat.completions.with_raw_response.create(
        model="llama", messages=[{"role": "user", "content": "x"}], extra_headers={"x-request-id": "z" * 500}
    )
    assert long.headers["x-request-id"].startswith("req_")  # an oversized id is replaced


async def test_chat_streaming_text(gateway):
    _, client = gateway
    stream = await client.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "stream me"}], stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == "echo: stream me"
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


async def test_stream_usage_is_hidden_when_not_requested(gateway):
    """The gateway asks the backend for usage (for token metrics) but the client must not see it."""
    _, client = gateway
    stream = await client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "a"}], stream=True)
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_streamed_tool_calls_assemble(gateway):
    _, client = gateway
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    messages = [{"role": "user", "content": "weather?"}]
    full = await client.chat.completions.create(model="tools", messages=messages, tools=tools)
    async with client.chat.completions.stream(model="tools", messages=messages, tools=tools) as s:
        async for _ in s:
            pass
        final = await s.get_final_completion()
    a, b = full.choices[0].message.tool_calls[0], final.choices[0].message.tool_calls[0]
    assert a.function.name == b.function.name == "get_weather"
    assert json.loads(a.function.arguments) == json.loads(b.function.arguments)
    assert final.choices[0].finish_reason == "tool_calls"


async def test_wildcard_route_sends_matched_part(gateway):
    _, client = gateway
    raw = await client.chat.completions.with_raw_response.create(
        model="together/Qwen2.5-72B", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-llm-proxy-deployment"] == "emu/Qwen2.5-72B"


async def test_models_listed(gateway):
    _, client = gateway
    ids = [m.id async for m in client.models.list()]
    assert "llama" in ids and "together/*" not in ids
    assert (await client.models.retrieve("llama")).id == "llama"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("nope")


async def test_embeddings(gateway):
    _, client = gateway
    resp = await client.embeddings.create(model="llama", input=["a", "b"])
    assert len(resp.data) == 2 and len(resp.data[0].embedding) > 0


async def test_legacy_completions(gateway):
    _, client = gateway
    resp = await client.completions.create(model="llama", prompt="Say hi", max_tokens=20)
    assert resp.choices[0].text


@pytest.mark.parametrize(
    ("model", "exc", "status"),
    [
        ("nope", openai.NotFoundError, 404),
        ("limited", openai.RateLimitError, 429),
        ("broken", openai.InternalServerError, 500),
        ("slow", openai.APIStatusError, 504),
        ("hang", openai.APIStatusError, 504),
        ("unreachable", openai.APIStatusError, 502),
        ("garbled", openai.APIStatusError, 502),
    ],
)
async def test_errors_in_openai_shape(gateway, model, exc, status):
    _, client = gateway
    with pytest.raises(exc) as info:
        await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    body = info.value.response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    text = info.value.response.text
    assert "127.0.0.1" not in text and "http://" not in text


async def test_rate_limit_keeps_retry_after(gateway):
    _, client = gateway
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="limited", messages=[{"role": "user", "content": "x"}])
    assert info.value.response.headers["retry-after"] == "3"


async def test_invalid_json_oversized_and_missing_model(gateway):
    server, _ = gateway
    url = proxy_url(server, "/v1/chat/completions")
    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
            assert (await r.json())["error"]["type"] == "invalid_request_error"
        async with s.post(url, json={"messages": []}) as r:
            assert r.status == 400
            assert (await r.json())["error"]["param"] == "model"
        big = {"model": "llama", "messages": [{"role": "user", "content": "x" * 70_000}]}
        async with s.post(url, json=big) as r:
            assert r.status == 413
            assert "error" in await r.json()


async def test_midstream_reset_ends_with_error_event(gateway):
    _, client = gateway
    stream = await client.chat.completions.create(model="reset", messages=[{"role": "user", "content": "abcdefgh"}], stream=True)
    got = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            got.append(chunk)
    assert got  # some content arrived before the failure


async def test_auth_required_when_configured(start_emulator, start_proxy):
    emu = await start_emulator("openai")
    cfg = config(emu)
    cfg["auth"] = {"keys": ["secret-1", "secret-2"]}
    server = await start_proxy(cfg)
    bad = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="wrong", max_retries=0)
    good = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="secret-2", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad.chat.completions.create(model="llama", messages=[{"role": "user", "content": "x"}])
    ok = await good.chat.completions.create(model="llama", messages=[{"role": "user", "content": "x"}])
    assert ok.choices[0].message.content == "echo: x"
    await bad.close()
    await good.close()


async def test_client_disconnect_releases_upstream(start_emulator, start_proxy):
    emu = await start_emulator("openai")
    body = {"model": "llama", "stream": True, "messages": [{"role": "user", "content": "x" * 400}]}
    cfg = config(emu)
    cfg["models"][0]["model"] = "llama-3.1-8b::chunks=200,chunk_delay=0.02"
    server = await start_proxy(cfg)
    gw = server.app[GATEWAY]
    url = proxy_url(server, "/v1/chat/completions")
    async with aiohttp.ClientSession() as s:
        resp = await s.post(url, json=body)
        await resp.content.readany()
        resp.close()  # the client goes away mid-stream
    client = gw.backends["emu"].client
    for _ in range(50):
        await asyncio.sleep(0.02)
        if not client.in_use():
            break
    assert not client.in_use()  # the upstream connection was released


async def test_metrics_after_traffic(gateway):
    server, client = gateway
    await client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "x"}])
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy_url(server, "/metrics")) as r:
            text = await r.text()
        async with s.get(proxy_url(server, "/health/ready")) as r:
            assert r.status == 200
        async with s.get(proxy_url(server, "/health/live")) as r:
            assert r.status == 200
    assert 'llm_proxy_added_latency_seconds_bucket{backend="emu",le="0.0001",model="llama",route="/v1/chat/completions",stream="false"}' in text
    assert 'llm_proxy_requests_total{backend="emu",model="llama",route="/v1/chat/completions",status="200"}' in text
    assert 'llm_proxy_tokens_total{backend="emu",kind="prompt",model="llama"}' in text
    assert "llm_proxy_in_flight_requests" in text


@pytest.mark.parametrize("stream", [False, True])
async def test_self_reported_added_latency_excludes_upstream_time(gateway, stream):
    """The upstream takes >= 300 ms; the proxy's own share must land far below that."""
    server, client = gateway
    if stream:
        s = await client.chat.completions.create(model="slowish", messages=[{"role": "user", "content": "x"}], stream=True)
        [c async for c in s]
    else:
        await client.chat.completions.create(model="slowish", messages=[{"role": "user", "content": "x"}])
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy_url(server, "/metrics")) as r:
            text = await r.text()
    flag = "true" if stream else "false"
    rest = f'model="slowish",route="/v1/chat/completions",stream="{flag}"'  # labels print sorted
    assert f'llm_proxy_added_latency_seconds_bucket{{backend="emu",le="0.1",{rest}}} 1.0' in text
    assert f'llm_proxy_upstream_latency_seconds_bucket{{backend="emu",le="0.2",{rest}}} 0.0' in text
    assert f'llm_proxy_upstream_latency_seconds_count{{backend="emu",{rest}}} 1.0' in text
