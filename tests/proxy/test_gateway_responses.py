"""The OpenAI Responses API (POST /v1/responses) through the running gateway, driven by the official
openai AsyncOpenAI client (`responses.create`, streamed and not, and the `responses.stream` helper)
on an OpenAI-compatible backend and on an Anthropic backend: text, a function-call round trip
(function_call_output in the next request), reasoning, finish rows and errors."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from tests.conftest import proxy_url

WEATHER = [{"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": False,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture
async def client(emulated_gateway):
    server = await emulated_gateway({
        "m-openai": ("openai", "llama-3.1-8b"),
        "m-openai-tools": ("openai", "llama-3.1-8b::tools"),
        "m-openai-reasoning": ("openai", "llama-3.1-8b::reasoning"),
        "m-openai-length": ("openai", "llama-3.1-8b::max_tokens"),
        "m-openai-error": ("openai", "llama-3.1-8b::chunks=8,error_after=4,chunk_delay=0.05"),
        "m-openai-429": ("openai", "llama-3.1-8b::status=429"),
        "m-openai-strict": ("openai", "llama-3.1-8b", {"unsupported_params": "error"}),
        "m-claude": ("anthropic", "claude-sonnet-4-5"),
        "m-claude-tools": ("anthropic", "claude-sonnet-4-5::tools"),
    })
    c = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="k", max_retries=0)
    yield c
    await c.close()


async def bounded(coro):
    return await asyncio.wait_for(coro, 15)


async def collect(stream) -> list:
    return [ev async for ev in stream]


@pytest.mark.parametrize("model", ["m-openai", "m-claude"])
async def test_create_not_streamed(client, model):
    r = await bounded(client.responses.create(model=model, input="hello world", instructions="Be brief.",
                                              max_output_tokens=64, temperature=0.2))
    assert r.object == "response" and r.id.startswith("resp_") and r.model == model
    assert r.status == "completed" and r.output_text == "echo: hello world"
    assert r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


@pytest.mark.parametrize("model", ["m-openai", "m-claude"])
async def test_create_streamed(client, model):
    events = await bounded(collect(await client.responses.create(
        model=model, stream=True, input=[{"role": "user", "content": [{"type": "input_text", "text": "hello there"}]}])))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: hello there"
    final = events[-1].response
    assert final.output_text == text and final.usage.output_tokens > 0


@pytest.mark.parametrize("model", ["m-openai", "m-claude"])
async def test_stream_helper(client, model):
    async def run():
        async with client.responses.stream(model=model, input="stream me") as stream:
            deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
            return deltas, await stream.get_final_response()
    deltas, final = await bounded(run())
    assert "".join(deltas) == final.output_text == "echo: stream me"
    assert final.status == "completed"


@pytest.mark.parametrize("model", ["m-openai-tools", "m-claude-tools"])
@pytest.mark.parametrize("stream", [False, True])
async def test_function_call_round_trip(client, model, stream):
    history: list = [{"role": "user", "content": "weather in Paris?"}]
    if stream:
        async def run():
            async with client.responses.stream(model=model, input=history, tools=WEATHER) as s:
                return await s.get_final_response()
        first = await bounded(run())
    else:
        first = await bounded(client.responses.create(model=model, input=history, tools=WEATHER))
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and first.status == "completed"
    call = calls[0]
    assert call.name == "get_weather" and call.call_id and call.id.startswith("fc_")
    assert isinstance(json.loads(call.arguments), dict)
    # The Agents SDK way: send the output items back, then the function's result.
    history += [o.model_dump(exclude_none=True) for o in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny"})
    second = await bounded(client.responses.create(model=model.replace("-tools", ""), input=history, tools=WEATHER))
    assert second.status == "completed" and second.output_text.startswith("echo:")


async def test_reasoning_becomes_a_reasoning_item(client):
    r = await bounded(client.responses.create(model="m-openai-reasoning", input="think", reasoning={"effort": "low"}))
    assert [o.type for o in r.output][-1] == "message" and r.output[0].type == "reasoning"
    assert r.output[0].summary[0].text
    events = await bounded(collect(await client.responses.create(model="m-openai-reasoning", input="think", stream=True)))
    assert "response.reasoning_summary_text.delta" in [e.type for e in events]
    assert events[-1].response.output[0].type == "reasoning"


async def test_length_is_incomplete(client):
    r = await bounded(client.responses.create(model="m-openai-length", input="long"))
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    events = await bounded(collect(await client.responses.create(model="m-openai-length", input="long", stream=True)))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


async def test_in_band_error_ends_the_stream_with_error_and_failed(client):
    events = await bounded(collect(await client.responses.create(model="m-openai-error", input="x", stream=True)))
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-2].message and events[-1].response.status == "failed"

    async def run():
        async with client.responses.stream(model="m-openai-error", input="x") as s:
            return await s.get_final_response()
    with pytest.raises(RuntimeError):
        await bounded(run())


async def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as info:
        await bounded(client.responses.create(model="no-such-model", input="x"))
    assert info.value.status_code == 404


async def test_upstream_429_is_a_rate_limit_error(client):
    with pytest.raises(openai.RateLimitError):
        await bounded(client.responses.create(model="m-openai-429", input="x"))


async def test_unknown_previous_response_is_a_404_naming_the_field(client):
    with pytest.raises(openai.NotFoundError) as info:
        await bounded(client.responses.create(model="m-openai", input="x", previous_response_id="resp_1"))
    assert info.value.param == "previous_response_id" and info.value.code == "previous_response_not_found"


# What the Codex CLI declares by default: a namespace of sub-agent tools, a free-form (custom)
# apply_patch tool and the built-in web_search.
CODEX_TOOLS = [
    {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents",
     "tools": [{"type": "function", "name": "spawn_agent", "description": "Start a sub-agent", "strict": False,
                "parameters": {"type": "object", "properties": {"task": {"type": "string"}}, "required": ["task"]}}]},
    {"type": "custom", "name": "apply_patch", "description": "Edit files",
     "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
    {"type": "web_search"},
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["m-openai-tools", "m-claude-tools"])
async def test_namespaced_call_reaches_the_client_named_as_declared_and_builtins_are_dropped(client, model, stream):
    raw = await bounded(client.responses.with_raw_response.create(
        model=model, input="spawn one", tools=CODEX_TOOLS, stream=stream))
    assert "tools:web_search" in raw.headers["x-llm-proxy-dropped-params"].split(",")
    if stream:
        events = [ev async for ev in raw.parse()]
        response = events[-1].response
    else:
        response = raw.parse()
    (call,) = [o for o in response.output if o.type != "reasoning"]
    assert (call.type, call.name, call.namespace) == ("function_call", "spawn_agent", "multi_agent_v1")
    assert isinstance(json.loads(call.arguments)["task"], str)
    # the client answers with the same names; the loop goes on
    follow = await bounded(client.responses.create(model=model, tools=CODEX_TOOLS, input=[
        {"role": "user", "content": "spawn one"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "namespace": call.namespace,
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "spawned"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "q"}},
    ]))
    assert follow.status == "completed"


@pytest.mark.parametrize("model", ["m-openai-tools", "m-claude-tools"])
async def test_custom_tool_call_round_trip(client, model):
    r = await bounded(client.responses.create(model=model, input="patch it", tools=[CODEX_TOOLS[1]]))
    (call,) = [o for o in r.output if o.type != "reasoning"]
    assert (call.type, call.name) == ("custom_tool_call", "apply_patch") and isinstance(call.input, str)
    follow = await bounded(client.responses.create(model=model, tools=[CODEX_TOOLS[1]], input=[
        {"role": "user", "content": "patch it"},
        {"type": "custom_tool_call", "call_id": call.call_id, "name": "apply_patch", "input": call.input},
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "done"},
    ]))
    assert follow.status == "completed"


async def test_builtin_tools_under_the_error_policy_are_a_400_naming_them(client):
    with pytest.raises(openai.BadRequestError) as info:
        await bounded(client.responses.create(model="m-openai-strict", input="x", tools=CODEX_TOOLS,
                                              tool_choice={"type": "web_search"}))
    assert info.value.param == "tools:web_search"
    assert "tools:web_search, tool_choice:web_search" in info.value.message
