"""The Ollama emulator, checked with the official `ollama` AsyncClient (and raw HTTP where the client
hides what matters: default streaming, truncation, resets, malformed lines)."""

import asyncio
import json

import aiohttp
import ollama
import pytest

from loadtest.emulators.behaviour import LatencyProfile
from loadtest.emulators.ollama import create_app

USER = [{"role": "user", "content": "hello there"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look something up",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]


@pytest.fixture
async def server(aiohttp_server):
    return await aiohttp_server(create_app(), host="127.0.0.1")


@pytest.fixture
def client(server):
    return ollama.AsyncClient(host=f"http://127.0.0.1:{server.port}", timeout=10)


async def post_lines(server, path: str, body: dict, headers: dict | None = None) -> tuple[int, str, list]:
    async with aiohttp.ClientSession() as s:
        async with s.post(server.make_url(path), json=body, headers=headers or {}) as r:
            text = await r.text()
            return r.status, r.headers.get("content-type", ""), [json.loads(x) for x in text.splitlines() if x]


async def test_chat_non_stream(client):
    resp = await asyncio.wait_for(client.chat(model="llama3.2", messages=USER, stream=False), 5)
    assert resp.message.role == "assistant"
    assert resp.message.content == "echo: hello there"
    assert resp.done is True and resp.done_reason == "stop"
    assert resp.eval_count > 0 and resp.prompt_eval_count > 0 and resp.total_duration > 0


async def test_chat_stream_pieces_and_final_metrics(client):
    parts = [p async for p in await client.chat(model="llama3.2::chunks=5", messages=USER, stream=True)]
    assert len(parts) == 6
    assert "".join(p.message.content for p in parts) == "echo: hello there"
    assert [p.done for p in parts] == [False] * 5 + [True]
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count > 0


async def test_stream_is_the_default_when_absent(server):
    status, ctype, lines = await post_lines(server, "/api/chat", {"model": "llama3.2", "messages": USER})
    assert status == 200 and ctype.startswith("application/x-ndjson")
    assert lines[-1]["done"] is True and len(lines) > 1


async def test_tool_call_whole_in_one_line(client):
    parts = [p async for p in await client.chat(model="llama3.2::tools", messages=USER, tools=TOOLS, stream=True)]
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    assert len(calls) == 1
    assert calls[0].function.name == "lookup" and calls[0].function.arguments == {"query": "Paris"}
    assert parts[-1].done_reason == "stop"


async def test_tool_call_id_and_default_tool(server):
    _, _, lines = await post_lines(server, "/api/chat", {"model": "m::tools", "messages": USER, "stream": False})
    call = lines[0]["message"]["tool_calls"][0]
    assert call["id"].startswith("call_") and call["function"] == {"index": 0, "name": "get_weather",
                                                                   "arguments": {"city": "Paris"}}


@pytest.mark.parametrize("model,think", [("qwen3::reasoning", None), ("qwen3", True)])
async def test_thinking(client, model, think):
    resp = await client.chat(model=model, messages=USER, think=think, stream=False)
    assert resp.message.thinking and resp.message.content == "echo: hello there"
    parts = [p async for p in await client.chat(model=model, messages=USER, think=think, stream=True)]
    thinking = [p.message.thinking for p in parts if p.message.thinking]
    assert "".join(thinking) == resp.message.thinking
    first_content = next(i for i, p in enumerate(parts) if p.message.content)
    assert all(not p.message.thinking for p in parts[first_content:])  # thinking comes first


async def test_stop_and_num_predict_are_honoured(client):
    resp = await client.chat(model="m", messages=USER, options={"stop": [" there"]}, stream=False)
    assert resp.message.content == "echo: hello" and resp.done_reason == "stop"
    resp = await client.chat(model="m", messages=USER, options={"num_predict": 2}, stream=False)
    assert resp.message.content == "echo: he" and resp.done_reason == "length"


@pytest.mark.parametrize("scenario,reason", [("max_tokens", "length"), ("text=hi_you", "stop")])
async def test_done_reason_and_text(client, scenario, reason):
    resp = await client.chat(model=f"m::{scenario},usage_in=7,usage_out=3", messages=USER, stream=False)
    assert resp.done_reason == reason
    assert (resp.prompt_eval_count, resp.eval_count) == (7, 3)


async def test_generate(client):
    resp = await client.generate(model="llama3.2", prompt="Once upon", raw=True, stream=False)
    assert resp.response == "echo: Once upon" and resp.done_reason == "stop"
    parts = [p async for p in await client.generate(model="llama3.2", prompt="Once", stream=True)]
    assert "".join(p.response for p in parts) == "echo: Once" and parts[-1].done


async def test_embed(client):
    resp = await client.embed(model="nomic-embed-text", input=["a", "b"], dimensions=8)
    assert len(resp.embeddings) == 2 and all(len(v) == 8 for v in resp.embeddings)
    assert abs(sum(x * x for x in resp.embeddings[0]) - 1.0) < 1e-9
    assert resp.embeddings[0] != resp.embeddings[1]
    assert resp.prompt_eval_count == 2
    single = await client.embed(model="nomic-embed-text", input="a", dimensions=8)
    assert single.embeddings == [resp.embeddings[0]]


async def test_list_show_version(client, server):
    models = (await client.list()).models
    assert "llama3.2:latest" in [m.model for m in models]
    assert models[0].details.format == "gguf"
    shown = await client.show("qwen3:8b")
    assert "thinking" in shown.capabilities and shown.details.family == "qwen3"
    async with aiohttp.ClientSession() as s:
        async with s.get(server.make_url("/api/version")) as r:
            assert (await r.json())["version"]


@pytest.mark.parametrize(
    "model,status,fragment",
    [
        ("missing", 404, 'model "missing" not found'),
        ("missing:7b", 404, "try pulling it first"),
        ("m::status=404", 404, "not found"),
        ("m::status=429,retry_after=2", 429, "emulated error 429"),
        ("m::status=500", 500, "emulated error 500"),
        ("m::context_length", 400, "context length"),
    ],
)
async def test_errors_are_response_errors(client, model, status, fragment):
    with pytest.raises(ollama.ResponseError) as exc:
        await client.chat(model=model, messages=USER, stream=False)
    assert exc.value.status_code == status and fragment in exc.value.error
    with pytest.raises(ollama.ResponseError) as exc:
        [p async for p in await client.chat(model=model, messages=USER, stream=True)]
    assert exc.value.status_code == status
    with pytest.raises(ollama.ResponseError):
        await client.embed(model=model, input="x")


async def test_error_shape_and_retry_after(server):
    async with aiohttp.ClientSession() as s:
        async with s.post(server.make_url("/api/chat"), json={"model": "m::status=429,retry_after=2"}) as r:
            assert r.status == 429 and r.headers["retry-after"] == "2"
            assert await r.json() == {"error": "emulated error 429"}
    with pytest.raises(ollama.ResponseError) as exc:
        await ollama.AsyncClient(host=f"http://127.0.0.1:{server.port}").show("missing")
    assert exc.value.status_code == 404


async def test_error_after_is_an_inband_error_line(client, server):
    stream = await client.chat(model="m::error_after=2", messages=USER, stream=True)
    got = []
    with pytest.raises(ollama.ResponseError) as exc:
        async for p in stream:
            got.append(p)
    assert len(got) == 2 and "error" in exc.value.error
    status, _, lines = await post_lines(server, "/api/chat", {"model": "m::error_after=1", "messages": USER})
    assert status == 200 and set(lines[-1]) == {"error"}


async def test_truncate_after_ends_without_done_line(server):
    status, _, lines = await post_lines(server, "/api/chat", {"model": "m::truncate_after=2", "messages": USER})
    assert status == 200 and len(lines) == 2 and not any(line["done"] for line in lines)


async def test_reset_after_aborts_the_connection(server):
    with pytest.raises(aiohttp.ClientError):
        await post_lines(server, "/api/chat", {"model": "m::reset_after=1,chunks=4", "messages": USER})


async def test_malformed(server):
    async with aiohttp.ClientSession() as s:
        async with s.post(server.make_url("/api/chat"), json={"model": "m::malformed", "stream": False}) as r:
            with pytest.raises(json.JSONDecodeError):
                json.loads(await r.text())
        async with s.post(server.make_url("/api/chat"), json={"model": "m::malformed", "messages": USER}) as r:
            lines = (await r.text()).splitlines()
            with pytest.raises(json.JSONDecodeError):
                json.loads(lines[-1])


async def test_hang_never_answers(server):
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(post_lines(server, "/api/chat", {"model": "m::hang", "messages": USER}), 0.3)


async def test_first_byte_and_chunk_delay(server):
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await post_lines(server, "/api/chat", {"model": "m::first_byte=0.2,chunk_delay=0.05,chunks=3", "messages": USER})
    assert loop.time() - t0 >= 0.2 + 3 * 0.05 - 0.01


async def test_latency_profile_is_used(aiohttp_server):
    server = await aiohttp_server(create_app(LatencyProfile("slow", p50=0.15, p95=0.15)), host="127.0.0.1")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await post_lines(server, "/api/chat", {"model": "m", "messages": USER, "stream": False})
    assert loop.time() - t0 >= 0.14


async def test_bad_requests(server):
    async with aiohttp.ClientSession() as s:
        async with s.post(server.make_url("/api/chat"), data=b"{nope") as r:
            assert r.status == 400 and "error" in await r.json()
        async with s.post(server.make_url("/api/chat"), json={"messages": USER}) as r:
            assert r.status == 400 and await r.json() == {"error": "model is required"}


async def test_tools_named_by_the_user_are_called(client):
    r = await asyncio.wait_for(client.chat(model="llama3.1:8b", stream=False, tools=TOOLS,
                                           messages=[{"role": "user", "content": "please use lookup"}]), 10)
    assert [c.function.name for c in r.message.tool_calls] == ["lookup"] and r.message.content == ""
    assert r.message.tool_calls[0].function.arguments == {"query": "Paris"}
    r = await asyncio.wait_for(client.chat(model="llama3.1:8b", stream=False, tools=TOOLS, messages=USER), 10)
    assert not r.message.tool_calls and r.message.content == "echo: hello there"
    history = [{"role": "user", "content": "please use lookup"},
               {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "lookup", "arguments": {}}}]},
               {"role": "tool", "content": "sunny"}]
    r = await asyncio.wait_for(client.chat(model="llama3.1:8b", stream=False, tools=TOOLS, messages=history), 10)
    assert not r.message.tool_calls


async def test_format_makes_the_reply_json(client):
    r = await asyncio.wait_for(client.chat(model="llama3.1:8b", stream=False, messages=USER, format="json"), 10)
    assert json.loads(r.message.content) == {"answer": "echo: hello there"}
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    r = await asyncio.wait_for(client.chat(model="llama3.1:8b", stream=False, messages=USER, format=schema), 10)
    assert json.loads(r.message.content) == {"city": "city-value"}


async def test_a_trailing_system_message_does_not_hide_the_user_turn(client):
    messages = [{"role": "user", "content": "please use lookup"}, {"role": "system", "content": "context"}]
    r = await asyncio.wait_for(client.chat(model="llama3.1:8b", stream=False, tools=TOOLS, messages=messages), 10)
    assert [c.function.name for c in r.message.tool_calls] == ["lookup"]
