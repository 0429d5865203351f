"""The Anthropic emulator checked against the official anthropic-python async client."""

from __future__ import annotations

import asyncio

import anthropic
import httpx2
import pytest

from loadtest.emulators.anthropic import create_app
from loadtest.emulators.behaviour import LatencyProfile

USER = [{"role": "user", "content": "hello there"}]
TOOLS = [{"name": "lookup", "description": "Look up", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}]


@pytest.fixture
async def base_url(aiohttp_server):
    server = await aiohttp_server(create_app())
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def client(base_url):
    c = anthropic.AsyncAnthropic(base_url=base_url, api_key="test-key", max_retries=0, timeout=10)
    yield c
    await c.close()


async def test_create_echoes_last_user_text(client):
    msg = await asyncio.wait_for(client.messages.create(model="claude-x", max_tokens=50, messages=USER), 10)
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: hello there"
    assert msg.stop_reason == "end_turn"
    assert msg.id.startswith("msg_") and msg.model == "claude-x"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


async def test_stream_helper_accumulates_thinking_text(client):
    async with client.messages.stream(model="m::reasoning,chunks=5", max_tokens=50, messages=USER) as stream:
        texts = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts) == "echo: hello there"
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].signature.startswith("EmuSig") and final.content[0].thinking
    assert final.content[1].text == "echo: hello there"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 1


async def test_stream_helper_assembles_tool_input(client):
    async with client.messages.stream(model="m::tools,chunks=7", max_tokens=50, messages=USER, tools=TOOLS) as stream:
        final = await stream.get_final_message()
    (block,) = final.content
    assert block.type == "tool_use" and block.name == "lookup" and block.id.startswith("toolu_")
    assert block.input == {"city": "Paris", "days": 1}
    assert final.stop_reason == "tool_use"


async def test_forced_tool_choice_calls_the_named_tool(client):
    tools = TOOLS + [{"name": "answer", "input_schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}]
    msg = await client.messages.create(model="m", max_tokens=50, messages=USER, tools=tools,
                                       tool_choice={"type": "tool", "name": "answer"})
    assert [(b.type, b.name, b.input) for b in msg.content] == [("tool_use", "answer", {"ok": True})]
    assert msg.stop_reason == "tool_use"


async def test_a_trailing_system_message_does_not_hide_the_user_turn(client):
    # Claude Code appends a beta `role: "system"` message after the user's turn (BetaSystemMessageParam).
    messages = [{"role": "user", "content": "use lookup please"}, {"role": "system", "content": "context"}]
    msg = await client.beta.messages.create(model="m", max_tokens=50, messages=messages, tools=TOOLS)
    assert [(b.type, b.name) for b in msg.content] == [("tool_use", "lookup")]
    done = messages + [{"role": "assistant", "content": [{"type": "tool_use", "id": msg.content[0].id, "name": "lookup",
                                                          "input": msg.content[0].input}]},
                       {"role": "user", "content": [{"type": "tool_result", "tool_use_id": msg.content[0].id,
                                                     "content": "sunny"}]}]
    msg = await client.beta.messages.create(model="m", max_tokens=50, messages=done, tools=TOOLS)
    assert [b.type for b in msg.content] == ["text"]


async def test_usage_and_max_tokens_scenario(client):
    msg = await client.messages.create(model="m::max_tokens,usage_in=11,usage_out=22,text=a_b", max_tokens=5,
                                       messages=USER)
    assert msg.stop_reason == "max_tokens" and msg.content[0].text == "a b"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (11, 22)


async def test_count_tokens(client):
    res = await client.messages.count_tokens(model="m", messages=USER)
    assert res.input_tokens > 0


async def test_models(client):
    page = await client.models.list()
    assert [m.id for m in page.data][:1] == ["claude-sonnet-4-5"]


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (400, anthropic.BadRequestError),
        (401, anthropic.AuthenticationError),
        (403, anthropic.PermissionDeniedError),
        (404, anthropic.NotFoundError),
        (429, anthropic.RateLimitError),
        (500, anthropic.InternalServerError),
        (529, anthropic.OverloadedError),
    ],
)
async def test_status_errors_raise_sdk_classes(client, status, exc):
    with pytest.raises(exc) as info:
        await client.messages.create(model=f"m::status={status},retry_after=3", max_tokens=5, messages=USER)
    assert info.value.status_code == status
    assert info.value.body["type"] == "error"
    assert info.value.response.headers["retry-after"] == "3"


async def test_overloaded_is_internal_server_error_subclass(client):
    with pytest.raises(anthropic.InternalServerError) as info:
        await client.messages.create(model="m::status=529", max_tokens=5, messages=USER)
    assert info.value.type == "overloaded_error"


async def test_context_length_wording(client):
    with pytest.raises(anthropic.BadRequestError) as info:
        await client.messages.create(model="m::context_length", max_tokens=5, messages=USER)
    assert "prompt is too long" in info.value.api_message


async def test_in_band_error_event(client):
    with pytest.raises(anthropic.APIStatusError) as info:
        async with client.messages.stream(model="m::error_after=2", max_tokens=50, messages=USER) as stream:
            async for _ in stream:
                pass
    assert info.value.type == "overloaded_error"


async def test_missing_auth_and_version(base_url):
    async with httpx2.AsyncClient() as http:
        r = await http.post(base_url + "/v1/messages", json={"model": "m", "max_tokens": 5, "messages": USER},
                            headers={"anthropic-version": "2023-06-01"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = await http.post(base_url + "/v1/messages", json={"model": "m", "max_tokens": 5, "messages": USER},
                            headers={"x-api-key": "k"})
        assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]
        r = await http.post(base_url + "/v1/messages", json={"model": "m", "messages": USER},
                            headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
        assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]


async def _raw_stream(base_url: str, model: str) -> bytes:
    async with httpx2.AsyncClient() as http:
        r = await http.post(base_url + "/v1/messages", json={"model": model, "max_tokens": 5, "messages": USER,
                                                             "stream": True},
                            headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}, timeout=5)
        return r.content


async def test_truncate_after_ends_without_message_stop(base_url):
    body = await _raw_stream(base_url, "m::truncate_after=1")
    assert body.count(b"event: content_block_delta") == 1 and b"message_stop" not in body


async def test_reset_after_aborts_the_connection(base_url):
    with pytest.raises(httpx2.HTTPError):
        await _raw_stream(base_url, "m::reset_after=1,chunk_delay=0.01")


async def test_malformed_stream_event_and_body(base_url, client):
    assert b"data: {not json" in await _raw_stream(base_url, "m::malformed")
    with pytest.raises(ValueError):  # the SDK surfaces the JSON decode error itself
        await client.messages.create(model="m::malformed", max_tokens=5, messages=USER)


async def test_stream_event_order(base_url):
    body = await _raw_stream(base_url, "m::chunks=2")
    names = [line[7:] for line in body.decode().splitlines() if line.startswith("event: ")]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]


async def test_latency_profile_first_byte(aiohttp_server):
    server = await aiohttp_server(create_app(LatencyProfile(name="slow", p50=0.2, p95=0.2)))
    c = anthropic.AsyncAnthropic(base_url=str(server.make_url("")).rstrip("/"), api_key="k", max_retries=0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await c.messages.create(model="m", max_tokens=5, messages=USER)
    assert loop.time() - t0 >= 0.19
    await c.close()


async def test_hang_never_answers(client):
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(client.messages.create(model="m::hang", max_tokens=5, messages=USER), 0.3)


async def test_tool_results_must_answer_a_previous_tool_use(client):
    msgs = [{"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "r"}]}]
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(model="m", max_tokens=10, messages=msgs)
    msgs[2]["content"][0]["tool_use_id"] = "toolu_1"
    assert (await client.messages.create(model="m", max_tokens=10, messages=msgs)).content


# -- the request steers the reply, as on the real API (what `llm-proxy conformance` probes) ------------


async def test_stop_sequences_and_max_tokens_cut_the_reply(client):
    msg = await client.messages.create(model="claude-x", max_tokens=50, stop_sequences=["gamma", "beta"],
                                       messages=[{"role": "user", "content": "alpha beta gamma"}])
    assert (msg.content[0].text, msg.stop_reason, msg.stop_sequence) == ("echo: alpha ", "stop_sequence", "beta")
    async with client.messages.stream(model="claude-x", max_tokens=2,
                                      messages=[{"role": "user", "content": "one two three four"}]) as s:
        final = await s.get_final_message()
    assert (final.content[0].text, final.stop_reason) == ("echo: on", "max_tokens")


async def test_thinking_request_gets_a_signed_thinking_block(client):
    async with client.messages.stream(model="claude-x", max_tokens=2048, messages=USER,
                                      thinking={"type": "enabled", "budget_tokens": 1024}) as s:
        final = await s.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"] and final.content[0].signature


async def test_tools_named_by_the_user_and_tool_choice(client):
    tools = TOOLS + [{"name": "clock", "input_schema": {"type": "object", "properties": {}}}]
    msg = await client.messages.create(model="claude-x", max_tokens=50, tools=tools,
                                       messages=[{"role": "user", "content": "use clock please"}])
    assert [b.name for b in msg.content if b.type == "tool_use"] == ["clock"] and msg.stop_reason == "tool_use"
    msg = await client.messages.create(model="claude-x", max_tokens=50, tools=tools, tool_choice={"type": "none"},
                                       messages=[{"role": "user", "content": "use clock please"}])
    assert [b.type for b in msg.content] == ["text"] and msg.stop_reason == "end_turn"
    msg = await client.messages.create(model="claude-x", max_tokens=50, tools=tools, tool_choice={"type": "any"},
                                       messages=USER)
    assert [b.name for b in msg.content if b.type == "tool_use"] == ["lookup"]


async def test_unknown_model_is_not_found(client):
    with pytest.raises(anthropic.NotFoundError) as e:
        await client.messages.create(model="no-such-model-x", max_tokens=5, messages=USER)
    assert e.value.body["error"]["type"] == "not_found_error"


# -- extended thinking in a tool loop, checked as the API checks it ---------------------------------

THINK = {"type": "enabled", "budget_tokens": 1024}
ASK = [{"role": "user", "content": "use lookup please"}]


async def _first_turn(client, stream: bool, model: str = "claude-x"):
    if stream:
        async with client.messages.stream(model=model, max_tokens=2048, messages=ASK, tools=TOOLS,
                                          thinking=THINK) as s:
            return await s.get_final_message()
    return await client.messages.create(model=model, max_tokens=2048, messages=ASK, tools=TOOLS, thinking=THINK)


def _loop(first, content):
    call = next(b for b in first.content if b.type == "tool_use")
    return ASK + [{"role": "assistant", "content": content},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["claude-x", "claude-x::redacted"])
async def test_tool_loop_with_its_thinking_blocks_sent_back_succeeds(client, stream, model):
    first = await _first_turn(client, stream, model)
    kinds = [b.type for b in first.content]
    assert kinds == (["thinking", "redacted_thinking", "tool_use"] if "redacted" in model else ["thinking", "tool_use"])
    msg = await client.messages.create(model="claude-x", max_tokens=2048, tools=TOOLS, thinking=THINK,
                                       messages=_loop(first, [b.model_dump() for b in first.content]))
    assert msg.stop_reason == "end_turn" and msg.content[-1].text.startswith("echo:")


async def test_tool_loop_without_its_thinking_block_is_the_apis_400(client):
    first = await _first_turn(client, stream=False)
    blocks = [b.model_dump() for b in first.content if b.type != "thinking"]
    with pytest.raises(anthropic.BadRequestError) as info:
        await client.messages.create(model="claude-x", max_tokens=2048, tools=TOOLS, thinking=THINK,
                                     messages=_loop(first, blocks))
    assert info.value.body["error"]["message"].startswith(
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`.")
    # without thinking the same history is fine (the requirement is thinking's)
    msg = await client.messages.create(model="claude-x", max_tokens=2048, tools=TOOLS, messages=_loop(first, blocks))
    assert msg.stop_reason == "end_turn"


@pytest.mark.parametrize("field,value", [("thinking", "edited thinking"), ("signature", "EmuSigAAAA"),
                                         ("signature", "")])
async def test_tool_loop_with_a_tampered_thinking_block_is_the_apis_400(client, field, value):
    first = await _first_turn(client, stream=False)
    blocks = [b.model_dump() for b in first.content]
    blocks[0][field] = value
    with pytest.raises(anthropic.BadRequestError) as info:
        await client.messages.create(model="claude-x", max_tokens=2048, tools=TOOLS, thinking=THINK,
                                     messages=_loop(first, blocks))
    assert info.value.body["error"]["message"] == "messages.1.content.0: Invalid `signature` in `thinking` block"


async def test_tampered_redacted_thinking_is_the_apis_400(client):
    first = await _first_turn(client, stream=False, model="claude-x::redacted")
    blocks = [b.model_dump() for b in first.content]
    blocks[1]["data"] = "RW11U2ln"
    with pytest.raises(anthropic.BadRequestError) as info:
        await client.messages.create(model="claude-x", max_tokens=2048, tools=TOOLS, thinking=THINK,
                                     messages=_loop(first, blocks))
    assert "messages.1.content.1" in info.value.body["error"]["message"]
