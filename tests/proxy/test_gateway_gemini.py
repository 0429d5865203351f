"""The Gemini format through the running gateway, driven by official SDKs: google-genai clients on an
OpenAI-compatible backend (translated) and on a Gemini backend (pass-through), and OpenAI / Anthropic
clients on a Gemini backend (translated).  The gateway serves POST /v1beta/models/{model}:{action} for
the gemini frontend and routes the model named in the URL like any other model name."""

from __future__ import annotations

import asyncio

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors, types

from tests.conftest import proxy_url

WEATHER = [types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="Weather for a city",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})])]
WEATHER_OAI = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture
async def gateway(emulated_gateway):
    server = await emulated_gateway({
        "m-openai": ("openai", "llama-3.1-8b"),
        "m-openai-tools": ("openai", "llama-3.1-8b::tools"),
        "m-gemini": ("gemini", "gemini-2.5-flash"),
        "m-gemini-tools": ("gemini", "gemini-2.5-flash::tools,reasoning"),
        "m-gemini-429": ("gemini", "gemini-2.5-flash::status=429"),
        "m-embed": ("gemini", "gemini-embedding-001"),
    })
    gem = genai.Client(api_key="client-key", http_options=types.HttpOptions(
        base_url=proxy_url(server), api_version="v1beta", timeout=10_000))
    oai = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="k", max_retries=0)
    ant = anthropic.AsyncAnthropic(base_url=proxy_url(server), api_key="k", max_retries=0)
    yield gem.aio, oai, ant
    await gem.aio.aclose()
    await oai.close()
    await ant.close()


async def bounded(coro):
    return await asyncio.wait_for(coro, 15)


async def stream_text(client, model: str, contents, config=None) -> tuple[str, list]:
    async def run():
        return [c async for c in await client.models.generate_content_stream(model=model, contents=contents, config=config)]
    chunks = await bounded(run())
    return "".join(c.text or "" for c in chunks), chunks


# -- google-genai on an OpenAI-compatible backend (translated) ---------------------------------------


async def test_genai_client_on_openai_backend(gateway):
    gem, _, _ = gateway
    config = types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=64, temperature=0.2)
    r = await bounded(gem.models.generate_content(model="m-openai", contents="hello world", config=config))
    assert r.text == "echo: hello world"
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.usage_metadata.prompt_token_count > 0 and r.usage_metadata.candidates_token_count > 0
    text, chunks = await stream_text(gem, "m-openai", "hello world")
    assert text == r.text
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP and chunks[-1].usage_metadata.total_token_count > 0


async def test_genai_tool_round_trip_on_openai_backend(gateway):
    gem, _, _ = gateway
    r = await bounded(gem.models.generate_content(model="m-openai-tools", contents="weather in Paris?",
                                                  config=types.GenerateContentConfig(tools=WEATHER)))
    call = r.function_calls[0]
    assert call.name == "get_weather" and call.args == {"city": "city-value"}  # the emulator's example args
    assert r.candidates[0].finish_reason == types.FinishReason.STOP  # Gemini's way of saying tool_calls
    _, chunks = await stream_text(gem, "m-openai-tools", "weather in Paris?", types.GenerateContentConfig(tools=WEATHER))
    streamed = [fc for c in chunks for fc in (c.function_calls or [])]
    assert [(fc.name, fc.args) for fc in streamed] == [("get_weather", {"city": "city-value"})]  # whole, once
    history = [types.Content(role="user", parts=[types.Part(text="weather in Paris?")]), r.candidates[0].content,
               types.Content(role="user", parts=[types.Part.from_function_response(name="get_weather", response={"output": "sunny"})])]
    follow = await bounded(gem.models.generate_content(model="m-openai", contents=history, config=types.GenerateContentConfig(tools=WEATHER)))
    # The OpenAI emulator refuses a tool message answering no earlier call (as the real API does), so
    # an answer proves the function response was paired with the synthesised call id.
    assert follow.text == "echo: weather in Paris?"


async def test_genai_errors_in_gemini_shape(gateway):
    gem, _, _ = gateway
    with pytest.raises(errors.ClientError) as e:
        await bounded(gem.models.generate_content(model="no-such-model", contents="x"))
    assert e.value.code == 404 and e.value.status == "NOT_FOUND"
    with pytest.raises(errors.ClientError) as e:
        await bounded(gem.models.generate_content(model="m-openai", contents="x", config=types.GenerateContentConfig(
            tools=[types.Tool(google_search=types.GoogleSearch())])))
    assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT"


async def test_genai_count_tokens_on_openai_backend_is_estimated(gateway):
    gem, _, _ = gateway
    n = await bounded(gem.models.count_tokens(model="m-openai", contents="x" * 40))
    assert n.total_tokens == 10


# -- google-genai on a Gemini backend (pass-through) -------------------------------------------------


async def test_genai_passthrough_generate_stream_count_embed(gateway):
    gem, _, _ = gateway
    r = await bounded(gem.models.generate_content(model="m-gemini", contents="hello there"))
    assert r.text == "echo: hello there" and r.model_version == "gemini-2.5-flash"
    text, chunks = await stream_text(gem, "m-gemini", "hello there")
    assert text == "echo: hello there" and chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    n = await bounded(gem.models.count_tokens(model="m-gemini", contents="some words"))
    assert n.total_tokens > 0
    e = await bounded(gem.models.embed_content(model="m-embed", contents=["a", "b"],
                                               config=types.EmbedContentConfig(output_dimensionality=8)))
    assert [len(x.values) for x in e.embeddings] == [8, 8]


async def test_genai_passthrough_keeps_thought_signatures(gateway):
    gem, _, _ = gateway
    r = await bounded(gem.models.generate_content(model="m-gemini-tools", contents="weather?",
                                                  config=types.GenerateContentConfig(tools=WEATHER)))
    parts = r.candidates[0].content.parts
    assert parts[0].thought is True
    assert parts[-1].function_call.name == "get_weather" and parts[-1].thought_signature.startswith(b"emu-sig:")


async def test_genai_passthrough_error(gateway):
    gem, _, _ = gateway
    with pytest.raises(errors.ClientError) as e:
        await bounded(gem.models.generate_content(model="m-gemini-429", contents="x"))
    assert e.value.code == 429 and e.value.status == "RESOURCE_EXHAUSTED"


# -- OpenAI / Anthropic clients on a Gemini backend (translated) --------------------------------------


async def test_openai_client_on_gemini_backend(gateway):
    _, oai, _ = gateway
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
    resp = await bounded(oai.chat.completions.create(model="m-gemini", messages=msgs, max_tokens=64, stop=["<END>"]))
    assert resp.choices[0].message.content == "echo: hello world" and resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    stream = await bounded(oai.chat.completions.create(model="m-gemini", messages=msgs, stream=True,
                                                       stream_options={"include_usage": True}))
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello world"
    assert chunks[-1].usage.completion_tokens > 0


async def test_openai_client_tool_round_trip_on_gemini_backend(gateway):
    _, oai, _ = gateway
    msgs = [{"role": "user", "content": "weather in Paris?"}]
    resp = await bounded(oai.chat.completions.create(model="m-gemini-tools", messages=msgs, tools=WEATHER_OAI))
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert choice.message.model_extra.get("reasoning_content")  # Gemini's thought summary
    # The tool result names no function: the gateway recovers it from the history (the emulator
    # refuses a functionResponse that does not answer a functionCall of the model turn before it).
    msgs += [choice.message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    follow = await bounded(oai.chat.completions.create(model="m-gemini", messages=msgs, tools=WEATHER_OAI))
    assert follow.choices[0].message.content == "echo: sunny"


async def test_anthropic_client_on_gemini_backend(gateway):
    _, _, ant = gateway
    msg = await bounded(ant.messages.create(model="m-gemini", max_tokens=64, messages=[{"role": "user", "content": "hello world"}]))
    assert msg.content[0].text == "echo: hello world" and msg.stop_reason == "end_turn"
    async with ant.messages.stream(model="m-gemini-tools", max_tokens=64, tools=[{
            "name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            messages=[{"role": "user", "content": "weather?"}]) as s:
        final = await bounded(s.get_final_message())
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["tool_use"]  # Gemini's thoughts carry no Anthropic signature
    assert final.content[0].input == {"city": "Paris"}


async def test_passthrough_streams_count_tokens(emulated_gateway):
    """Gemini -> Gemini relays bytes; the token metrics still read each chunk's usageMetadata."""
    import aiohttp

    server = await emulated_gateway({"tokens-gem": ("gemini", "gemini-2.5-flash")})
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=proxy_url(server), api_version="v1beta"))
    text, _ = await stream_text(client.aio, "tokens-gem", "count my tokens please")
    await client.aio.aclose()
    assert text
    async with aiohttp.ClientSession() as s, s.get(proxy_url(server, "/metrics")) as r:
        metrics = await r.text()
    for kind in ("prompt", "completion"):
        line = next(x for x in metrics.splitlines()
                    if x.startswith("llm_proxy_tokens_total{") and 'model="tokens-gem"' in x and f'kind="{kind}"' in x)
        assert float(line.rsplit(" ", 1)[1]) > 0
