"""The Cohere v2 emulator checked against the official `cohere` SDK (AsyncClientV2)."""

from __future__ import annotations

import asyncio

import cohere
import httpx
import pytest

from loadtest.emulators.cohere import create_app

USER = [{"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look up", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]


@pytest.fixture
async def base_url(aiohttp_server):
    server = await aiohttp_server(create_app())
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def client(base_url):
    c = cohere.AsyncClientV2(api_key="test-key", base_url=base_url, timeout=10, max_retries=0)
    yield c
    await c._client_wrapper.httpx_client.httpx_client.aclose()


async def _events(client, **kw) -> list:
    return [e async for e in client.chat_stream(**kw)]


async def test_chat_echoes_and_reports_token_usage(client):
    r = await asyncio.wait_for(client.chat(model="command-r", messages=USER), 10)
    assert r.finish_reason == "COMPLETE"
    assert r.message.content[0].type == "text" and r.message.content[0].text == "echo: hello there"
    assert r.usage.tokens.input_tokens > r.usage.billed_units.input_tokens > 0
    assert r.usage.tokens.output_tokens == r.usage.billed_units.output_tokens > 0


async def test_stream_text_event_sequence(client):
    events = await _events(client, model="m::chunks=3,reasoning", messages=USER)
    types = [e.type for e in events]
    assert types == ["message-start", "content-start", "content-delta", "content-delta", "content-delta", "content-end",
                     "content-start", "content-delta", "content-delta", "content-delta", "content-end", "message-end"]
    assert events[1].delta.message.content.type == "thinking"
    assert "".join(e.delta.message.content.text for e in events[7:10]) == "echo: hello there"
    assert "".join(e.delta.message.content.thinking for e in events[2:5])
    assert events[-1].delta.finish_reason == "COMPLETE" and events[-1].delta.usage.tokens.output_tokens > 0


async def test_tool_call_whole_and_streamed(client):
    r = await client.chat(model="m::tools", messages=USER, tools=TOOLS)
    assert r.finish_reason == "TOOL_CALL" and r.message.tool_plan
    (call,) = r.message.tool_calls
    assert call.function.name == "lookup" and call.function.arguments == '{"city": "Paris", "days": 1}'
    events = await _events(client, model="m::chunks=4", messages=USER, tools=TOOLS, tool_choice="REQUIRED")
    types = [e.type for e in events]
    assert types[1:3] == ["tool-plan-delta", "tool-plan-delta"] and types.count("tool-call-delta") == 4
    start = next(e for e in events if e.type == "tool-call-start")
    assert start.delta.message.tool_calls.function.name == "lookup"
    args = "".join(e.delta.message.tool_calls.function.arguments for e in events if e.type == "tool-call-delta")
    assert args == '{"city": "Paris", "days": 1}' and events[-1].delta.finish_reason == "TOOL_CALL"


async def test_tool_round_trip_echoes_the_result(client):
    r = await client.chat(model="m::tools", messages=USER, tools=TOOLS)
    call = r.message.tool_calls[0]
    history = USER + [
        {"role": "assistant", "tool_plan": r.message.tool_plan, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call.id, "content": [{"type": "text", "text": "sunny"}]},
    ]
    r2 = await client.chat(model="m", messages=history, tools=TOOLS)
    assert r2.message.content[0].text == "echo: sunny"
    bad = USER + [{"role": "tool", "tool_call_id": "nope", "content": "x"}]
    with pytest.raises(cohere.BadRequestError):
        await client.chat(model="m", messages=bad)


async def test_unknown_fields_are_refused_with_422(base_url):
    async with httpx.AsyncClient(base_url=base_url, headers={"authorization": "Bearer k"}) as http:
        strict = [{"type": "function", "function": {**TOOLS[0]["function"], "strict": True}}]
        r = await http.post("/v2/chat", json={"model": "m", "messages": USER, "tools": strict})
        assert r.status_code == 422 and "strict" in r.json()["message"]
        r = await http.post("/v2/chat", json={"model": "m", "messages": USER, "top_p": 0.5})
        assert r.status_code == 422 and "top_p" in r.json()["message"]
        r = await http.post("/v2/chat", json={"model": "m", "messages": USER, "tools": TOOLS, "tool_choice": "auto"})
        assert r.status_code == 400


async def test_errors_in_cohere_shape(client, base_url):
    with pytest.raises(cohere.TooManyRequestsError) as e:
        await client.chat(model="m::status=429,retry_after=3", messages=USER)
    assert e.value.body["message"] == "emulated error 429" and e.value.headers["retry-after"] == "3"
    with pytest.raises(cohere.BadRequestError) as e:
        await client.chat(model="m::context_length", messages=USER)
    assert e.value.body["message"].startswith("too many tokens")
    async with httpx.AsyncClient(base_url=base_url) as http:
        r = await http.post("/v2/chat", json={"model": "m", "messages": USER})
    assert r.status_code == 401 and r.json()["message"]


async def test_in_stream_error_is_message_end_with_error(client):
    events = await _events(client, model="m::error_after=1", messages=USER)
    assert events[-1].type == "message-end"
    assert events[-1].delta.finish_reason == "ERROR" and events[-1].delta.error


async def test_embed_needs_input_type_and_returns_floats(client):
    r = await client.embed(model="embed-v4.0", texts=["a", "b"], input_type="search_document",
                           embedding_types=["float"], output_dimension=8)
    assert len(r.embeddings.float_) == 2 and len(r.embeddings.float_[0]) == 8
    assert r.meta.billed_units.input_tokens == 2
    with pytest.raises(cohere.BadRequestError):
        await client.embed(model="embed-v4.0", texts=["a"], input_type=None, embedding_types=["float"])
