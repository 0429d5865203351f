"""The cloud-platform backends through the running gateway, driven by the official OpenAI and
Anthropic SDKs: text, stream, stop, length, usage, tools (whole and streamed), a tool round trip,
429 and 500 on each.  One row per backend in BACKENDS; the emulators choose their behaviour from the
backend model's `::scenario` suffix."""

from __future__ import annotations

import asyncio

import anthropic
import openai
import pytest

from loadtest.emulators import bedrock as bedrock_emulator
from tests.conftest import proxy_url
from tests.vertex_support import PROJECT, start_vertex

WEATHER_OAI = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
WEATHER_ANT = [{"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]

VERTEX = {"provider": "vertex", "project": PROJECT, "location": "us-central1"}
# backend row -> (emulator, backend config without base_url, backend model, model-entry keys)
BACKENDS = {
    "cohere": ("cohere", {"provider": "cohere", "api_key": "co-test"}, "command-r-plus-08-2024", {}),
    "vertex-gemini": ("vertex", VERTEX, "gemini-2.0-flash", {}),
    "vertex-claude": ("vertex", VERTEX, "claude-3-5-sonnet-v2@20241022", {"location": "us-east5"}),
    "bedrock": ("bedrock", {"provider": "bedrock", "region": "us-east-1", "aws_session_token": "",
                            "aws_access_key_id": bedrock_emulator.ACCESS_KEY_ID,
                            "aws_secret_access_key": bedrock_emulator.SECRET_ACCESS_KEY},
                "anthropic.claude-3-5-sonnet-20241022-v2:0", {}),
}
SCENARIOS = {"": "", "-tools": "::tools", "-short": "::max_tokens", "-429": "::status=429,retry_after=1",
             "-500": "::status=500"}


@pytest.fixture
async def gateway(start_emulator, start_proxy, aiohttp_server, tmp_path):
    backends, models = {}, []
    vertex_url, _, credentials = await start_vertex(aiohttp_server, tmp_path)
    for row, (emu, config, model, keys) in BACKENDS.items():
        if emu == "vertex":  # the emulator trusts the service account the gateway authenticates as
            backends[row] = {**config, "base_url": vertex_url, "credentials": str(credentials)}
        else:
            backends[row] = {**config, "base_url": await start_emulator(emu)}
        models += [{"name": f"{row}{name}", "backend": row, "model": model + suffix, **keys}
                   for name, suffix in SCENARIOS.items()]
    server = await start_proxy({"backends": backends, "models": models})
    oai = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="k", max_retries=0)
    ant = anthropic.AsyncAnthropic(base_url=proxy_url(server), api_key="k", max_retries=0)
    yield oai, ant
    await oai.close()
    await ant.close()


def bounded(coro):
    return asyncio.wait_for(coro, 15)


ROWS = pytest.mark.parametrize("row", list(BACKENDS))
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]


@ROWS
async def test_openai_text_stream_stop_length_usage(gateway, row):
    oai, _ = gateway
    r = await bounded(oai.chat.completions.create(model=row, messages=HELLO, max_tokens=64, temperature=0.3, top_p=0.9))
    assert r.choices[0].message.content == "echo: hello world" and r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    stream = await bounded(oai.chat.completions.create(model=row, messages=HELLO, stream=True,
                                                       stream_options={"include_usage": True}))
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.prompt_tokens > 0 and chunks[-1].usage.completion_tokens > 0
    r = await bounded(oai.chat.completions.create(model=row, messages=HELLO, stop=["world"]))
    assert r.choices[0].finish_reason == "stop" and "world" not in r.choices[0].message.content
    r = await bounded(oai.chat.completions.create(model=f"{row}-short", messages=HELLO, max_tokens=3))
    assert r.choices[0].finish_reason == "length"


@ROWS
async def test_openai_tools_whole_streamed_and_round_trip(gateway, row):
    oai, _ = gateway
    msgs = [{"role": "user", "content": "weather in Paris?"}]
    r = await bounded(oai.chat.completions.create(model=f"{row}-tools", messages=msgs, tools=WEATHER_OAI))
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments.replace(" ", "") == '{"city":"Paris"}'
    stream = await bounded(oai.chat.completions.create(model=f"{row}-tools", messages=msgs, tools=WEATHER_OAI, stream=True))
    chunks = [c async for c in stream]
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert deltas[0].function.name == "get_weather" and deltas[0].id
    assert "".join(d.function.arguments or "" for d in deltas).replace(" ", "") == '{"city":"Paris"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    msgs += [choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    follow = await bounded(oai.chat.completions.create(model=row, messages=msgs, tools=WEATHER_OAI))
    assert follow.choices[0].message.content == "echo: sunny"


@ROWS
async def test_openai_errors(gateway, row):
    oai, _ = gateway
    with pytest.raises(openai.RateLimitError) as e:
        await bounded(oai.chat.completions.create(model=f"{row}-429", messages=HELLO))
    assert e.value.status_code == 429 and e.value.response.headers.get("retry-after") == "1"
    with pytest.raises(openai.InternalServerError) as e:
        await bounded(oai.chat.completions.create(model=f"{row}-500", messages=HELLO))
    assert e.value.status_code == 500
    with pytest.raises(openai.InternalServerError):
        stream = await bounded(oai.chat.completions.create(model=f"{row}-500", messages=HELLO, stream=True))
        [c async for c in stream]


@ROWS
async def test_anthropic_text_stream_length_usage(gateway, row):
    _, ant = gateway
    msg = await bounded(ant.messages.create(model=row, max_tokens=64, system="Be brief.",
                                            messages=[{"role": "user", "content": "hello world"}]))
    assert msg.content[0].text == "echo: hello world" and msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    async with ant.messages.stream(model=row, max_tokens=64, messages=[{"role": "user", "content": "hello world"}]) as s:
        final = await bounded(s.get_final_message())
    assert final.content[0].text == "echo: hello world" and final.usage.output_tokens > 0
    msg = await bounded(ant.messages.create(model=f"{row}-short", max_tokens=3, messages=[{"role": "user", "content": "hi"}]))
    assert msg.stop_reason == "max_tokens"


@ROWS
async def test_anthropic_tools_and_round_trip(gateway, row):
    _, ant = gateway
    msgs = [{"role": "user", "content": "weather in Paris?"}]
    async with ant.messages.stream(model=f"{row}-tools", max_tokens=64, tools=WEATHER_ANT, messages=msgs) as s:
        final = await bounded(s.get_final_message())
    assert final.stop_reason == "tool_use"
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    msgs += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}]
    follow = await bounded(ant.messages.create(model=row, max_tokens=64, tools=WEATHER_ANT, messages=msgs))
    assert follow.content[0].text == "echo: sunny" and follow.stop_reason == "end_turn"


@ROWS
async def test_anthropic_errors(gateway, row):
    _, ant = gateway
    with pytest.raises(anthropic.RateLimitError):
        await bounded(ant.messages.create(model=f"{row}-429", max_tokens=8, messages=[{"role": "user", "content": "x"}]))
    with pytest.raises(anthropic.InternalServerError) as e:
        await bounded(ant.messages.create(model=f"{row}-500", max_tokens=8, messages=[{"role": "user", "content": "x"}]))
    assert e.value.status_code == 500


async def test_openai_embeddings_on_vertex(start_proxy, aiohttp_server, tmp_path):
    url, _, credentials = await start_vertex(aiohttp_server, tmp_path)
    server = await start_proxy({"backends": {"vx": {**VERTEX, "base_url": url, "credentials": str(credentials)}},
                                "models": [{"name": "e", "backend": "vx", "model": "text-embedding-005"}]})
    oai = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="k", max_retries=0)
    try:
        r = await bounded(oai.embeddings.create(model="e", input=["a", "bb"], dimensions=8))
        assert [len(d.embedding) for d in r.data] == [8, 8] and r.usage.prompt_tokens == 2
    finally:
        await oai.close()


async def test_openai_embeddings_on_cohere(gateway):
    oai, _ = gateway
    r = await bounded(oai.embeddings.create(model="cohere", input=["a", "bb"], dimensions=8))
    assert [len(d.embedding) for d in r.data] == [8, 8] and r.usage.prompt_tokens == 2


async def test_anthropic_client_on_vertex_claude_is_relayed_byte_for_byte(gateway):
    _, ant = gateway
    # Relayed: the body is Vertex's answer as is (its model is the backend's id, not the client's name).
    msg = await bounded(ant.messages.create(model="vertex-claude", max_tokens=64, messages=[{"role": "user", "content": "hi"}]))
    assert msg.model == "claude-3-5-sonnet-v2@20241022" and msg.content[0].text == "echo: hi"
    async with ant.messages.stream(model="vertex-claude", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
        final = await bounded(s.get_final_message())
    assert final.model == "claude-3-5-sonnet-v2@20241022" and final.content[0].text == "echo: hi"
    raw = await bounded(ant.messages.with_raw_response.count_tokens(
        model="vertex-claude", messages=[{"role": "user", "content": "count me"}]))
    assert (await raw.parse()).input_tokens > 0 and "x-llm-proxy-token-count" not in raw.headers  # Vertex counted


async def test_gemini_client_on_vertex_gemini_is_relayed(gateway):
    from google import genai
    from google.genai import types

    oai, _ = gateway
    base = str(oai.base_url).removesuffix("/v1/")
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=base, api_version="v1beta", timeout=10_000))
    r = await bounded(client.aio.models.generate_content(model="vertex-gemini", contents="hello there"))
    assert r.text == "echo: hello there" and r.model_version == "gemini-2.0-flash"  # Vertex's body, relayed
    chunks = [c async for c in await client.aio.models.generate_content_stream(model="vertex-gemini", contents="hi")]
    assert "".join(c.text or "" for c in chunks) == "echo: hi"
    assert (await bounded(client.aio.models.count_tokens(model="vertex-gemini", contents="some words"))).total_tokens > 0
    await client.aio.aclose()


async def test_a_revoked_vertex_token_costs_one_request(start_proxy, aiohttp_server, tmp_path):
    from loadtest.emulators import vertex

    url, app, credentials = await start_vertex(aiohttp_server, tmp_path)
    server = await start_proxy({"backends": {"vx": {**VERTEX, "base_url": url, "credentials": str(credentials)}},
                                "models": [{"name": "g", "backend": "vx", "model": "gemini-2.0-flash"}]})
    oai = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="k", max_retries=0)
    try:
        assert (await bounded(oai.chat.completions.create(model="g", messages=HELLO))).choices[0].message.content
        app[vertex.TOKENS].clear()  # revoked at Google's side
        with pytest.raises(openai.APIStatusError) as e:
            await bounded(oai.chat.completions.create(model="g", messages=HELLO))
        assert e.value.status_code == 401  # Vertex's UNAUTHENTICATED, passed on
        r = await bounded(oai.chat.completions.create(model="g", messages=HELLO))
        assert r.choices[0].message.content == "echo: hello world" and app[vertex.SETTINGS]["grants"] == 2
    finally:
        await oai.close()
