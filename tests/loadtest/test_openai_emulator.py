"""The OpenAI-compatible emulator, checked with the official openai client (async)."""

import asyncio
import base64
import json
import struct

import openai
import pytest

from loadtest.emulators.openai import create_app

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
    },
}


@pytest.fixture
async def base(aiohttp_server):
    server = await aiohttp_server(create_app(), host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def client(base):
    c = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="sk-test", max_retries=0, timeout=10)
    yield c
    await c.close()


def user(text):
    return [{"role": "user", "content": text}]


async def test_chat_echoes_last_user_text_with_usage(client):
    r = await client.chat.completions.create(model="emulated-gpt", messages=user("hello there"))
    assert r.choices[0].message.content == "echo: hello there"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0


async def test_chat_n_choices(client):
    r = await client.chat.completions.create(model="m", messages=user("x"), n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]


async def test_stream_text_and_usage_chunk(client):
    stream = await client.chat.completions.create(
        model="m::chunks=5", messages=user("abcdefghij"), stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: abcdefghij"
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


async def test_stream_without_include_usage_has_no_usage_chunk(client):
    stream = await client.chat.completions.create(model="m", messages=user("x"), stream=True)
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


async def test_tools_streamed_and_assembled_by_the_sdk(client):
    plain = await client.chat.completions.create(model="m::tools", messages=user("x"), tools=[WEATHER_TOOL])
    call = plain.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"city": "city-value", "days": 1}
    assert plain.choices[0].finish_reason == "tool_calls"
    async with client.chat.completions.stream(
        model="m::tools,chunks=6", messages=user("x"), tools=[WEATHER_TOOL]
    ) as stream:
        fragments = 0
        async for event in stream:
            fragments += event.type == "tool_calls.function.arguments.delta"
        final = await stream.get_final_completion()
    assert fragments >= 3
    streamed = final.choices[0].message.tool_calls[0]
    assert streamed.function.arguments == call.function.arguments
    assert final.choices[0].finish_reason == "tool_calls"


async def test_reasoning_content(client):
    r = await client.chat.completions.create(model="m::reasoning", messages=user("q"))
    assert r.choices[0].message.model_extra["reasoning_content"] == "Thinking about: q"
    stream = await client.chat.completions.create(model="m::reasoning", messages=user("q"), stream=True)
    thought = "".join([(c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" async for c in stream])
    assert thought == "Thinking about: q"


async def test_max_tokens_finish_length(client):
    r = await client.chat.completions.create(model="m::max_tokens", messages=user("q"))
    assert r.choices[0].finish_reason == "length"


async def test_usage_override(client):
    r = await client.chat.completions.create(model="m::usage_in=11,usage_out=7", messages=user("q"))
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (11, 7)


async def test_completions(client):
    r = await client.completions.create(model="m", prompt="say hi")
    assert r.choices[0].text == "echo: say hi" and r.object == "text_completion"
    stream = await client.completions.create(model="m::chunks=3", prompt="say hi", stream=True)
    assert "".join([c.choices[0].text async for c in stream]) == "echo: say hi"


async def test_embeddings_float_and_base64(client):
    f = await client.embeddings.create(model="emulated-embedding", input=["a", "b"], encoding_format="float")
    assert [d.index for d in f.data] == [0, 1] and len(f.data[0].embedding) == 8
    again = await client.embeddings.create(model="emulated-embedding", input=["a"], encoding_format="float")
    assert again.data[0].embedding == f.data[0].embedding
    raw = await client.embeddings.with_raw_response.create(model="e", input="a", encoding_format="base64")
    packed = json.loads(raw.http_response.content)["data"][0]["embedding"]
    decoded = struct.unpack("<8f", base64.b64decode(packed))
    assert decoded == pytest.approx(f.data[0].embedding, abs=1e-6)


async def test_models(client):
    page = await client.models.list()
    assert "emulated-gpt" in [m.id for m in page.data]
    assert (await client.models.retrieve("anything")).id == "anything"


@pytest.mark.parametrize(
    "status,exc",
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_status_errors_raise_sdk_exceptions(client, status, exc):
    with pytest.raises(exc) as info:
        await client.chat.completions.create(model=f"m::status={status}", messages=user("x"))
    assert info.value.status_code == status
    assert info.value.body["message"] == f"emulated error {status}"


async def test_retry_after_header(base):
    c = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        await c.chat.completions.create(model="m::status=429,retry_after=2", messages=user("x"))
    assert info.value.response.headers["retry-after"] == "2"
    await c.close()


async def test_context_length(client):
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="m::context_length", messages=user("x"))
    assert info.value.code == "context_length_exceeded"
    assert "maximum context length" in info.value.message


async def test_invalid_request_is_400(client):
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="m", messages=[])


async def test_mid_stream_error_raises_api_error(client):
    stream = await client.chat.completions.create(model="m::error_after=2,chunks=5", messages=user("x"), stream=True)
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass


async def test_reset_after_breaks_the_connection(client):
    stream = await client.chat.completions.create(model="m::reset_after=2,chunks=5", messages=user("x"), stream=True)
    with pytest.raises(Exception):
        async for _ in stream:
            pass


async def test_truncate_after_ends_without_finish(base):
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/v1/chat/completions", json={"model": "m::truncate_after=2", "stream": True,
                                                                "messages": user("x")}) as r:
            body = await r.read()
    assert body.count(b"data: ") == 2 and b"[DONE]" not in body and b"finish_reason\": \"stop" not in body


async def test_malformed(client):
    with pytest.raises(ValueError):  # the SDK lets json's decode error through
        await client.chat.completions.create(model="m::malformed", messages=user("x"))


async def test_first_byte_delay(client):
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await client.chat.completions.create(model="m::first_byte=0.2", messages=user("x"))
    assert loop.time() - t0 >= 0.2


async def test_hang_times_out(base):
    c = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="k", max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        await c.chat.completions.create(model="m::hang", messages=user("x"))
    await c.close()


@pytest.mark.parametrize("style", ["deployments", "v1"])
async def test_azure_client(base, style):
    if style == "deployments":
        c = openai.AsyncAzureOpenAI(azure_endpoint=base, api_key="k", api_version="2024-10-21", max_retries=0)
    else:
        c = openai.AsyncOpenAI(base_url=f"{base}/openai/v1/", api_key="k", max_retries=0,
                               default_headers={"api-key": "k"})
    r = await c.chat.completions.create(model="my-deployment", messages=user("azure"))
    assert r.choices[0].message.content == "echo: azure"
    stream = await c.chat.completions.create(model="my-deployment", messages=user("azure"), stream=True)
    chunks = [ch async for ch in stream]
    assert chunks[0].choices == []  # Azure's prompt_filter_results chunk
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "echo: azure"
    e = await c.embeddings.create(model="my-deployment", input="x")
    assert len(e.data[0].embedding) == 8
    await c.close()


async def test_azure_models_style_and_auth(base):
    import aiohttp

    async with aiohttp.ClientSession() as s:
        url = f"{base}/models/chat/completions"
        payload = {"model": "mistral-large", "messages": user("hi")}
        async with s.post(url, json=payload, params={"api-version": "2024-05-01-preview"}) as r:
            assert r.status == 401
        async with s.post(url, json=payload, headers={"api-key": "k"}) as r:
            assert r.status == 404  # api-version is required
        async with s.post(url, json=payload, params={"api-version": "2024-05-01-preview"},
                          headers={"authorization": "Bearer t"}) as r:
            assert (await r.json())["choices"][0]["message"]["content"] == "echo: hi"


async def test_azure_deployment_without_key_is_401(base):
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/openai/deployments/d/chat/completions?api-version=2024-10-21",
                          json={"messages": user("x")}) as r:
            assert r.status == 401


@pytest.mark.parametrize("style", [None, "deployments", "v1", "models"])
async def test_backend_adapters_against_the_emulator(base, style):
    """The adapters' requests are accepted by the emulator and its stream decodes to the plain answer."""
    import aiohttp

    from adapters import ir
    from adapters.azure_backend import AzureBackend
    from adapters.base import Target
    from adapters.openai_backend import OpenAIBackend

    if style is None:
        b = OpenAIBackend(f"{base}/v1", "k", {}, OpenAIBackend.Options(preset="vllm"))
    else:
        b = AzureBackend(base, "k", {}, AzureBackend.Options(api_style=style))
    target = Target(model="dep::tools,reasoning")
    req = ir.ChatRequest(model="c", messages=[ir.Message("user", [ir.Text("q")])],
                         tools=[ir.ToolDef("lookup", parameters=WEATHER_TOOL["function"]["parameters"])])
    async with aiohttp.ClientSession() as s:
        plain_http = b.chat_request(req, target)
        async with s.post(plain_http.url, data=plain_http.body, headers=plain_http.headers) as r:
            plain = b.chat_response(await r.read(), req, target)
        req.stream = True
        http = b.chat_request(req, target)
        decoder = b.stream_decoder(req, target)
        events = []
        async with s.post(http.url, data=http.body, headers=http.headers) as r:
            async for piece in r.content.iter_any():
                events += decoder.feed(piece)
        events += decoder.close()
    folded = ir.fold_events(events, model="m", id="i", created=0)
    assert [type(p) for p in folded.choices[0].parts] == [ir.Reasoning, ir.ToolCall]
    assert folded.choices[0].parts[1].arguments == plain.choices[0].parts[1].arguments
    assert folded.choices[0].finish_reason == plain.choices[0].finish_reason == "tool_calls"
    assert isinstance(events[-2], ir.UsageEvent) and events[-2].usage.input_tokens > 0


async def test_tool_results_must_answer_a_previous_call(client):
    msgs = [{"role": "user", "content": "x"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_2", "content": "r"}]
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="m", messages=msgs)
    msgs[2]["tool_call_id"] = "call_1"
    assert (await client.chat.completions.create(model="m", messages=msgs)).choices


# -- the request steers the reply, as on a model server (what `llm-proxy conformance` probes) ----------

TIME_TOOL = {"type": "function", "function": {"name": "clock", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


async def test_max_tokens_and_stop_cut_the_reply(client):
    r = await client.chat.completions.create(model="emulated-gpt", messages=user("one two three four five six"),
                                             max_tokens=2)
    assert r.choices[0].finish_reason == "length" and r.choices[0].message.content == "echo: on"
    r = await client.chat.completions.create(model="emulated-gpt", messages=user("alpha beta gamma"), stop=["gamma", "beta"])
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == "echo: alpha "
    assert r.choices[0].model_extra["stop_reason"] == "beta"  # vLLM names the stop string that fired
    stream = await client.chat.completions.create(model="emulated-gpt", messages=user("alpha beta"), stop="beta",
                                                  stream=True)
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: alpha "


async def test_tools_named_by_the_user_are_called_and_tool_choice_steers(client):
    tools = [WEATHER_TOOL, TIME_TOOL]
    r = await client.chat.completions.create(model="emulated-gpt", messages=user("use lookup and clock"), tools=tools)
    calls = r.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["lookup", "clock"] and len({c.id for c in calls}) == 2
    assert json.loads(calls[0].function.arguments) == {"city": "city-value", "days": 1}
    assert r.choices[0].finish_reason == "tool_calls"
    r = await client.chat.completions.create(model="emulated-gpt", messages=user("use lookup"), tools=tools,
                                             tool_choice="none")
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content == "echo: use lookup"
    r = await client.chat.completions.create(model="emulated-gpt", messages=user("hi"), tools=tools, tool_choice="required")
    assert [c.function.name for c in r.choices[0].message.tool_calls] == ["lookup"]
    r = await client.chat.completions.create(model="emulated-gpt", messages=user("hi"), tools=tools,
                                             tool_choice={"type": "function", "function": {"name": "clock"}})
    assert [c.function.name for c in r.choices[0].message.tool_calls] == ["clock"]
    r = await client.chat.completions.create(model="emulated-gpt", messages=user("hi"), tools=tools)
    assert r.choices[0].message.tool_calls is None  # auto and nothing named: a text answer


async def test_streamed_parallel_calls_accumulate_in_the_sdk(client):
    async with client.chat.completions.stream(model="emulated-gpt", messages=user("use lookup and clock"),
                                              tools=[WEATHER_TOOL, TIME_TOOL]) as s:
        final = await s.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["lookup", "clock"]
    assert json.loads(calls[1].function.arguments) == {"city": "city-value"}


async def test_tool_result_gets_a_text_answer(client):
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    msgs = [*user("use lookup"), {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    r = await client.chat.completions.create(model="emulated-gpt", messages=msgs, tools=[WEATHER_TOOL])
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content == "echo: use lookup"


async def test_structured_output_logprobs_reasoning_and_unknown_model(client):
    from pydantic import BaseModel

    class City(BaseModel):
        city: str

    parsed = await client.chat.completions.parse(model="emulated-gpt", messages=user("a city"), response_format=City)
    assert parsed.choices[0].message.parsed == City(city="city-value")
    r = await client.chat.completions.create(model="emulated-gpt", messages=user("x"), response_format={"type": "json_object"})
    assert json.loads(r.choices[0].message.content) == {"answer": "echo: x"}
    r = await client.chat.completions.create(model="emulated-gpt", messages=user("hello"), logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == "echo: hello" and len(content[0].top_logprobs) == 2
    r = await client.chat.completions.create(model="emulated-gpt", messages=user("2+2"), reasoning_effort="low")
    assert r.choices[0].message.model_extra["reasoning_content"] == "Thinking about: 2+2"
    with pytest.raises(openai.NotFoundError) as e:
        await client.chat.completions.create(model="no-such-model-x", messages=user("x"))
    assert e.value.code == "model_not_found"


async def test_a_trailing_system_message_does_not_hide_the_user_turn(client):
    # An agent (Claude Code, translated) appends a system reminder after the user's turn.
    messages = user("use lookup") + [{"role": "system", "content": "context"}]
    r = await client.chat.completions.create(model="emulated-gpt", messages=messages, tools=[WEATHER_TOOL])
    assert [c.function.name for c in r.choices[0].message.tool_calls] == ["lookup"]
