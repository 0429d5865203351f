"""Cross-format translation through the running gateway, driven by the official SDKs:
Anthropic clients on an OpenAI-compatible backend, OpenAI clients on an Anthropic backend, the
Anthropic pass-through, and OpenAI/Anthropic clients on every native open-model backend."""

from __future__ import annotations

import base64
import json
import struct

import anthropic
import openai
import pytest

from tests.conftest import proxy_url

WEATHER_OAI = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
WEATHER_ANT = [{"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]

# provider -> (emulator, base-url suffix, backend model, extra backend keys, model keys, has tools)
NATIVE = {
    "ollama": ("ollama", "", "llama3.1:8b", {}, {}, True),
    "tgi": ("tgi", "", "meta-llama/Llama-3.1-8B-Instruct", {}, {"chat_template": "llama3"}, False),
    "llamacpp": ("llamacpp", "", "llama-3.1-8b", {}, {"chat_template": "llama3"}, False),
    "replicate": ("replicate", "", "meta/meta-llama-3-8b-instruct", {"api_key": "r8_test", "poll_interval": 0.05}, {"chat_template": "llama3"}, False),
    "anthropic": ("anthropic", "", "claude-sonnet-4-5", {"api_key": "sk-ant-test"}, {}, True),
    "openai": ("openai", "/v1", "llama-3.1-8b", {}, {}, True),
}


# scenario suffix -> emulator scenario (sent as the x-emulate header: prompt-only backends send no model)
SCENARIOS = {"": "", "-tools": "tools", "-short": "max_tokens", "-429": "status=429,retry_after=1"}


@pytest.fixture
async def gateway(start_emulator, start_proxy):
    backends, models = {}, []
    for provider, (emu, suffix, model, extra, model_keys, _) in NATIVE.items():
        url = await start_emulator(emu)
        for name, scenario in SCENARIOS.items():
            headers = {"x-emulate": scenario} if scenario else {}
            backends[provider + name] = {"provider": provider, "base_url": url + suffix, "headers": headers, **extra}
            models.append({"name": f"m-{provider}{name}", "backend": provider + name, "model": model, **model_keys})
    server = await start_proxy({"backends": backends, "models": models})
    oai = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="k", max_retries=0)
    ant = anthropic.AsyncAnthropic(base_url=proxy_url(server), api_key="k", max_retries=0)
    yield oai, ant
    await oai.close()
    await ant.close()


@pytest.mark.parametrize("provider", list(NATIVE))
async def test_openai_client_every_backend(gateway, provider):
    oai, _ = gateway
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
    resp = await oai.chat.completions.create(model=f"m-{provider}", messages=msgs, max_tokens=64, stop=["<END>"])
    assert "hello world" in resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop"
    if provider != "replicate":  # Replicate reports no usage for streams; non-stream has metrics
        assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    stream = await oai.chat.completions.create(model=f"m-{provider}", messages=msgs, stream=True,
                                               stream_options={"include_usage": True})
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == resp.choices[0].message.content


@pytest.mark.parametrize("provider", list(NATIVE))
async def test_anthropic_client_every_backend(gateway, provider):
    _, ant = gateway
    msg = await ant.messages.create(model=f"m-{provider}", max_tokens=64, system="Be brief.",
                                    messages=[{"role": "user", "content": "hello world"}])
    assert msg.content[0].type == "text" and "hello world" in msg.content[0].text
    assert msg.stop_reason == "end_turn"
    async with ant.messages.stream(model=f"m-{provider}", max_tokens=64,
                                   messages=[{"role": "user", "content": "hello world"}]) as s:
        final = await s.get_final_message()
    assert final.content[0].text == msg.content[0].text


@pytest.mark.parametrize("provider", list(NATIVE))
async def test_length_finish_maps(gateway, provider):
    oai, ant = gateway
    # max_tokens is sent: Replicate can only tell a length stop by comparing the count with it
    resp = await oai.chat.completions.create(model=f"m-{provider}-short", max_tokens=5,
                                             messages=[{"role": "user", "content": "x"}])
    msg = await ant.messages.create(model=f"m-{provider}-short", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert resp.choices[0].finish_reason == "length"
    assert msg.stop_reason == "max_tokens"


# TGI answers 429 when its queue is full: that is overload (503 / Anthropic 529), not a rate limit.
ERROR_EXPECT = {p: (429, 429, "rate_limit_error") for p in NATIVE} | {"tgi": (503, 529, "overloaded_error")}


@pytest.mark.parametrize("provider", list(NATIVE))
async def test_backend_errors_in_both_client_formats(gateway, provider):
    oai, ant = gateway
    oai_status, ant_status, ant_type = ERROR_EXPECT[provider]
    with pytest.raises(openai.APIStatusError) as e1:
        await oai.chat.completions.create(model=f"m-{provider}-429", messages=[{"role": "user", "content": "x"}])
    assert e1.value.status_code == oai_status
    assert set(e1.value.response.json()["error"]) >= {"message", "type", "param", "code"}
    with pytest.raises(anthropic.APIStatusError) as e2:
        await ant.messages.create(model=f"m-{provider}-429", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e2.value.status_code == ant_status
    assert e2.value.response.json()["error"]["type"] == ant_type


@pytest.mark.parametrize("provider", [p for p, v in NATIVE.items() if v[5]])
async def test_openai_tool_round_trip(gateway, provider):
    oai, _ = gateway
    msgs = [{"role": "user", "content": "weather in Paris?"}]
    first = await oai.chat.completions.create(model=f"m-{provider}-tools", messages=msgs, tools=WEATHER_OAI)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    async with oai.chat.completions.stream(model=f"m-{provider}-tools", messages=msgs, tools=WEATHER_OAI) as s:
        streamed = (await s.get_final_completion()).choices[0].message.tool_calls[0]
    assert json.loads(streamed.function.arguments) == args
    msgs += [first.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    second = await oai.chat.completions.create(model=f"m-{provider}", messages=msgs, tools=WEATHER_OAI)
    assert second.choices[0].message.content


@pytest.mark.parametrize("provider", [p for p, v in NATIVE.items() if v[5]])
async def test_anthropic_tool_round_trip(gateway, provider):
    _, ant = gateway
    msgs = [{"role": "user", "content": "weather in Paris?"}]
    first = await ant.messages.create(model=f"m-{provider}-tools", max_tokens=100, messages=msgs, tools=WEATHER_ANT)
    use = next(b for b in first.content if b.type == "tool_use")
    assert first.stop_reason == "tool_use" and use.name == "get_weather"
    async with ant.messages.stream(model=f"m-{provider}-tools", max_tokens=100, messages=msgs, tools=WEATHER_ANT) as s:
        final = await s.get_final_message()
    assert next(b for b in final.content if b.type == "tool_use").input == use.input
    msgs += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}]
    second = await ant.messages.create(model=f"m-{provider}", max_tokens=100, messages=msgs, tools=WEATHER_ANT)
    assert second.content[0].text


async def test_count_tokens_estimate_on_non_anthropic_backend(gateway):
    _, ant = gateway
    raw = await ant.messages.with_raw_response.count_tokens(
        model="m-openai", messages=[{"role": "user", "content": "hello there, how are you?"}]
    )
    assert (await raw.parse()).input_tokens > 0
    assert raw.headers["x-llm-proxy-token-count"] == "estimate"
    passed = await ant.messages.count_tokens(model="m-anthropic", messages=[{"role": "user", "content": "hi"}])
    assert passed.input_tokens > 0


async def test_dropped_params_reported(gateway):
    oai, _ = gateway
    raw = await oai.chat.completions.with_raw_response.create(
        model="m-anthropic", messages=[{"role": "user", "content": "x"}], frequency_penalty=0.5, seed=3
    )
    dropped = set(raw.headers["x-llm-proxy-dropped-params"].split(","))
    assert {"frequency_penalty", "seed"} <= dropped


@pytest.mark.parametrize("provider", ["ollama", "openai"])
async def test_embeddings_on_native_backends(gateway, provider):
    oai, _ = gateway
    resp = await oai.embeddings.create(model=f"m-{provider}", input=["hello", "world"])
    assert [d.index for d in resp.data] == [0, 1]
    assert len(resp.data[0].embedding) >= 8 and resp.data[0].embedding != resp.data[1].embedding
    assert resp.usage.prompt_tokens > 0
    b64 = await oai.embeddings.create(model=f"m-{provider}", input="hello", encoding_format="base64")
    raw = base64.b64decode(b64.data[0].embedding)  # little-endian float32, as OpenAI sends them
    floats = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert floats == pytest.approx(resp.data[0].embedding, rel=1e-6)


async def test_embeddings_unsupported_backend_is_a_clear_400(gateway):
    oai, ant = gateway
    with pytest.raises(openai.BadRequestError) as info:
        await oai.embeddings.create(model="m-anthropic", input="hello")
    assert "embeddings" in info.value.response.json()["error"]["message"]


async def test_huggingface_hub_client_through_the_gateway(start_emulator, start_proxy):
    """huggingface_hub's InferenceClient speaks the OpenAI chat route to a base URL: same gateway."""
    from huggingface_hub import AsyncInferenceClient

    url = await start_emulator("anthropic")
    server = await start_proxy({"backends": {"a": {"provider": "anthropic", "base_url": url, "api_key": "k"}},
                                "models": [{"name": "claude", "backend": "a", "model": "claude-x"}]})
    client = AsyncInferenceClient(base_url=proxy_url(server), api_key="k")
    out = await client.chat_completion(messages=[{"role": "user", "content": "hi hf"}], model="claude", max_tokens=20)
    assert out.choices[0].message.content == "echo: hi hf" and out.choices[0].finish_reason == "stop"
    parts = [c.choices[0].delta.content or "" async for c in await client.chat_completion(
        messages=[{"role": "user", "content": "hi hf"}], model="claude", max_tokens=20, stream=True) if c.choices]
    assert "".join(parts) == "echo: hi hf"
