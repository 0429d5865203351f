"""The official `ollama` AsyncClient drives the gateway's Ollama routes (/api/chat, /api/generate,
/api/embed, /api/tags, /api/version) on an OpenAI-compatible backend, an Anthropic backend (both
translated through the IR) and an Ollama backend (relayed byte for byte, only `model` rewritten)."""

from __future__ import annotations

import asyncio

import aiohttp
import ollama
import pytest

from tests.conftest import proxy_url

# backend kind -> backend model (the emulators are tests/conftest.py's EMULATED)
BACKENDS = {
    "openai": "llama-3.1-8b",
    "anthropic": "claude-sonnet-4-5",
    "ollama": "llama3.1:8b",  # Ollama in, Ollama out: relayed byte for byte
}
# model-name suffix -> emulator scenario
SCENARIOS = {
    "": "",
    "-tools": "tools",
    "-think": "reasoning",
    "-short": "max_tokens",
    "-429": "status=429,retry_after=1",
    "-500": "status=500",
    "-ctx": "context_length",
    "-midstream": "chunks=6,error_after=2,chunk_delay=0.05",
}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
USER = [{"role": "user", "content": "hello world"}]
TIMEOUT = 10


@pytest.fixture
async def gateway(emulated_gateway):
    server = await emulated_gateway({
        f"{kind}{name}": (kind, f"{model}::{scenario}" if scenario else model)
        for kind, model in BACKENDS.items() for name, scenario in SCENARIOS.items()
    })
    client = ollama.AsyncClient(host=proxy_url(server), timeout=TIMEOUT)
    yield server, client
    await client.close()


@pytest.fixture(params=list(BACKENDS))
def kind(request):
    return request.param


async def test_chat_non_streaming(gateway, kind):
    _, client = gateway
    resp = await client.chat(model=kind, messages=[{"role": "system", "content": "Be brief."}, *USER],
                             options={"temperature": 0.2, "num_predict": 64})
    # Translated answers name the client's model; Ollama -> Ollama is relayed byte for byte, so the
    # answer names the backend's model, as every same-format pass-through does.
    assert resp.model == (BACKENDS[kind] if kind == "ollama" else kind)
    assert resp.message.role == "assistant" and "hello world" in resp.message.content
    assert resp.done is True and resp.done_reason == "stop"
    assert resp.prompt_eval_count > 0 and resp.eval_count > 0
    assert resp.created_at


async def test_chat_streaming_matches_non_streaming(gateway, kind):
    _, client = gateway
    whole = await client.chat(model=kind, messages=USER)
    parts = [p async for p in await client.chat(model=kind, messages=USER, stream=True)]
    assert len(parts) > 2
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    final = parts[-1]
    assert final.done_reason == "stop" and final.eval_count > 0 and final.prompt_eval_count > 0
    assert final.total_duration >= final.eval_duration >= 0


async def test_stream_is_ndjson_and_the_default(gateway):
    server, _ = gateway
    async with aiohttp.ClientSession() as s:  # no "stream" key: Ollama streams by default
        async with s.post(proxy_url(server, "/api/chat"), json={"model": "openai", "messages": USER}) as r:
            assert r.status == 200 and r.headers["content-type"].startswith("application/x-ndjson")
            lines = [line for line in (await r.read()).split(b"\n") if line]
    assert len(lines) > 2 and b'"done":true' in lines[-1]


async def test_chat_thinking_and_length(gateway, kind):
    _, client = gateway
    resp = await client.chat(model=f"{kind}-think", messages=USER, think=True)
    assert resp.message.thinking and "hello world" in resp.message.content
    parts = [p async for p in await client.chat(model=f"{kind}-think", messages=USER, think=True, stream=True)]
    assert "".join(p.message.thinking or "" for p in parts) == resp.message.thinking
    short = await client.chat(model=f"{kind}-short", messages=USER, options={"num_predict": 3})
    assert short.done_reason == "length"


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_call_round_trip(gateway, kind, stream):
    _, client = gateway
    if stream:
        parts = [p async for p in await client.chat(model=f"{kind}-tools", messages=USER, tools=[WEATHER], stream=True)]
        calls = [c for p in parts for c in p.message.tool_calls or ()]
        assert parts[-1].done_reason == "stop"
    else:
        resp = await client.chat(model=f"{kind}-tools", messages=USER, tools=[WEATHER])
        calls = list(resp.message.tool_calls)
        assert resp.done_reason == "stop"  # the native API never says "tool_calls"
    assert len(calls) == 1
    call = calls[0].function
    assert call.name == "get_weather" and isinstance(call.arguments, dict) and "city" in call.arguments
    # The official client drops tool-call ids: the gateway pairs the result with the call by name,
    # and the backend (which checks the pairing) accepts the history.
    history = [*USER, {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": call.name, "arguments": call.arguments}}]},
               {"role": "tool", "content": "11 degrees", "tool_name": "get_weather"}]
    follow = await client.chat(model=kind, messages=history, tools=[WEATHER])
    assert follow.done is True and follow.message.content


async def test_generate(gateway, kind):
    _, client = gateway
    resp = await client.generate(model=kind, prompt="hello world", system="Be brief.")
    assert "hello world" in resp.response and resp.done and resp.done_reason == "stop"
    assert resp.eval_count > 0
    parts = [p async for p in await client.generate(model=kind, prompt="hello world", stream=True)]
    assert "".join(p.response for p in parts) == resp.response and parts[-1].done


async def test_generate_raw_prompt_on_a_completions_backend(gateway):
    _, client = gateway
    resp = await client.generate(model="openai", prompt="[INST] hello raw [/INST]", raw=True)
    assert "hello raw" in resp.response


async def test_model_load_call_is_refused(gateway):
    _, client = gateway
    with pytest.raises(ollama.ResponseError) as info:
        await client.generate(model="openai")
    assert info.value.status_code == 400 and "load" in info.value.error


async def test_embed(gateway):
    _, client = gateway
    resp = await client.embed(model="openai", input=["a", "b"])
    assert len(resp.embeddings) == 2 and len(resp.embeddings[0]) > 0
    assert resp.model == "openai"
    one = await client.embed(model="openai", input="a")
    assert one.embeddings[0] == resp.embeddings[0]


async def test_embed_on_a_backend_without_embeddings(gateway):
    _, client = gateway
    with pytest.raises(ollama.ResponseError) as info:
        await client.embed(model="anthropic", input="a")
    assert info.value.status_code == 400 and "embeddings" in info.value.error


async def test_list_and_version(gateway):
    server, client = gateway
    listed = await client.list()
    names = [m.model for m in listed.models]
    assert "openai" in names and "anthropic-tools" in names
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy_url(server, "/api/version")) as r:
            assert r.status == 200 and (await r.json())["version"]


@pytest.mark.parametrize(
    ("suffix", "status"),
    [("-429", 429), ("-500", 500), ("-ctx", 400), ("-nope", 404)],
)
async def test_errors(gateway, kind, suffix, status):
    _, client = gateway
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as info:
            result = await client.chat(model=f"{kind}{suffix}", messages=USER, stream=stream)
            if stream:
                [p async for p in result]
        assert info.value.status_code == status
        assert info.value.error and "127.0.0.1" not in info.value.error


async def test_midstream_error_is_an_error_line(gateway, kind):
    _, client = gateway
    got = []
    with pytest.raises(ollama.ResponseError) as info:
        async for part in await client.chat(model=f"{kind}-midstream", messages=USER, stream=True):
            got.append(part)
    assert got and not any(p.done for p in got)  # content arrived, the stream never said done
    assert info.value.error


async def test_invalid_requests_in_ollama_shape(gateway):
    server, _ = gateway
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/api/chat"), json={"model": "openai", "messages": [{"role": "robot"}]}) as r:
            assert r.status == 400 and isinstance((await r.json())["error"], str)
        async with s.post(proxy_url(server, "/api/chat"), data=b"{oops") as r:
            assert r.status == 400 and isinstance((await r.json())["error"], str)


async def test_bounded_in_time(gateway):
    _, client = gateway
    resp = await asyncio.wait_for(client.chat(model="openai", messages=USER), TIMEOUT)
    assert resp.done
