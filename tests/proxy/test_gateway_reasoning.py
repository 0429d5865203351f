"""Reasoning survives a Responses client's tool loop: the official openai AsyncOpenAI client drives
the gateway's /v1/responses (streamed and not) on emulated backends that check signatures as the
real APIs do -- Anthropic with extended thinking (signed thinking and redacted_thinking blocks) and
Gemini 3 (thought signatures on function calls).  The manual loop appends `response.output` (or the
items of `response.output_item.done`) and a function_call_output; without the reasoning items the
same loop is the backend's 400, so the success path is no accident.  Also: the loop by reference
(item_reference, previous_response_id), an Anthropic client's thinking tool loop through the
same-format route (pass-through), and Chat Completions on Gemini 3 with Google's `extra_content`."""

from __future__ import annotations

import asyncio

import anthropic
import openai
import pytest

from adapters.openai_responses_reasoning import open_envelope, seal  # to forge well-formed envelopes
from tests.conftest import proxy_url

WEATHER = [{"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": False,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
ASK = [{"role": "user", "content": "call get_weather for Paris please"}]
MODELS = {
    "claude": ("anthropic", "claude-sonnet-4-5"),
    "claude-redacted": ("anthropic", "claude-sonnet-4-5::redacted"),
    "gemini3": ("gemini", "gemini-3-pro-preview"),
}


@pytest.fixture
async def gateway(emulated_gateway):
    return await emulated_gateway(MODELS)


@pytest.fixture
async def client(gateway):
    c = openai.AsyncOpenAI(base_url=proxy_url(gateway, "/v1"), api_key="k", max_retries=0)
    yield c
    await c.aclose() if hasattr(c, "aclose") else await c.close()


async def bounded(coro):
    return await asyncio.wait_for(coro, 15)


async def turn(client, model: str, items: list, stream: bool) -> list[dict]:
    """One request of the loop -> its output items as a client keeps them (plain dicts)."""
    kw = {"model": model, "input": items, "tools": WEATHER, "reasoning": {"effort": "low"}}
    if not stream:
        r = await bounded(client.responses.create(**kw))
        assert r.status == "completed"
        return [o.model_dump(exclude_none=True) for o in r.output]

    async def run():
        done = []
        async for ev in await client.responses.create(stream=True, **kw):
            if ev.type == "response.output_item.done":  # what Codex keeps
                done.append(ev.item.model_dump(exclude_none=True))
            elif ev.type in ("error", "response.failed"):
                raise AssertionError(f"stream failed: {ev}")
        return done
    return await bounded(run())


def results(output: list[dict]) -> list[dict]:
    return [{"type": "function_call_output", "call_id": o["call_id"], "output": "sunny"}
            for o in output if o["type"] == "function_call"]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("model,kinds", [
    ("claude", ["reasoning", "function_call"]),
    ("claude-redacted", ["reasoning", "reasoning", "function_call"]),
    # the thought summary (unsigned: summary only), then the signature that sat on the call
    ("gemini3", ["reasoning", "reasoning", "function_call"]),
])
async def test_tool_loop_with_reasoning_sent_back_succeeds(client, model, kinds, stream):
    first = await turn(client, model, ASK, stream)
    assert [o["type"] for o in first] == kinds
    sealed = [o["encrypted_content"] for o in first if "encrypted_content" in o]
    assert sealed and all(e.startswith("llm-proxy.r1.") for e in sealed)
    history = ASK + first + results(first)
    second = await turn(client, model, history, stream)
    # (streamed from Gemini, the signature on the answer's last text part splits the message in two)
    assert [o["type"] for o in second][-1] == "message"
    assert "".join(c["text"] for o in second if o["type"] == "message" for c in o["content"]) == "echo: sunny"
    # a third turn over the whole history (two assistant turns, each with its reasoning) still passes
    third = await turn(client, model, history + second + [{"role": "user", "content": "and get_weather in Rome?"}],
                       stream)
    assert [o["type"] for o in third] == kinds


@pytest.mark.parametrize("model,message", [
    ("claude", "Expected `thinking` or `redacted_thinking`, but found `tool_use`"),
    ("gemini3", "Function call is missing a thought_signature"),
])
async def test_the_same_loop_without_the_reasoning_items_is_the_backends_400(client, model, message):
    first = await turn(client, model, ASK, stream=False)
    history = ASK + [o for o in first if o["type"] != "reasoning"] + results(first)
    with pytest.raises(openai.BadRequestError) as info:
        await turn(client, model, history, stream=False)
    assert message in info.value.message


async def test_a_tampered_envelope_is_refused_by_the_provider_and_a_garbled_one_by_the_gateway(client):
    first = await turn(client, "claude", ASK, stream=False)
    reasoning = first[0]
    part = open_envelope(reasoning["encrypted_content"], "x")
    part.text += " (edited)"
    forged = ASK + [{**reasoning, "encrypted_content": seal(part)}, *first[1:]] + results(first)
    with pytest.raises(openai.BadRequestError) as info:
        await turn(client, "claude", forged, stream=False)
    assert "Invalid `signature` in `thinking` block" in info.value.message
    garbled = ASK + [{**reasoning, "encrypted_content": "llm-proxy.r1.%%%"}, *first[1:]] + results(first)
    with pytest.raises(openai.BadRequestError) as info:
        await turn(client, "claude", garbled, stream=False)
    assert info.value.param == "input[1].encrypted_content"


async def test_reasoning_of_one_provider_never_reaches_the_other(client):
    """Gemini's turn replayed to Anthropic with thinking: its signature is not Anthropic's, so it is
    dropped and Anthropic sees a tool loop without thinking (its 400, not a signature error); and
    Anthropic's turn replayed to Gemini 3 leaves the call unsigned (Gemini's 400)."""
    gem = await turn(client, "gemini3", ASK, stream=False)
    with pytest.raises(openai.BadRequestError) as info:
        await turn(client, "claude", ASK + gem + results(gem), stream=False)
    assert "Expected `thinking` or `redacted_thinking`" in info.value.message
    ant = await turn(client, "claude", ASK, stream=False)
    with pytest.raises(openai.BadRequestError) as info:
        await turn(client, "gemini3", ASK + ant + results(ant), stream=False)
    assert "missing a thought_signature" in info.value.message


async def test_anthropic_client_thinking_tool_loop_passes_through(gateway):
    """The same-format route: Claude Code's way, thinking blocks echoed as the API returned them."""
    c = anthropic.AsyncAnthropic(base_url=proxy_url(gateway), api_key="k", max_retries=0)
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    think = {"type": "enabled", "budget_tokens": 1024}
    try:
        async with c.messages.stream(model="claude-redacted", max_tokens=2048, tools=tools, thinking=think,
                                     messages=ASK) as s:
            first = await bounded(s.get_final_message())
        assert [b.type for b in first.content] == ["thinking", "redacted_thinking", "tool_use"]
        call = first.content[-1]
        result = {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}
        msgs = ASK + [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                      {"role": "user", "content": [result]}]
        second = await bounded(c.messages.create(model="claude", max_tokens=2048, tools=tools, thinking=think,
                                                 messages=msgs))
        assert second.content[-1].text == "echo: sunny"
    finally:
        await c.close()


# -- referred to, not sent back: the stored items hold the envelope ---------------------------------


async def first_response(client, model: str, stream: bool):
    kw = {"model": model, "input": ASK, "tools": WEATHER, "reasoning": {"effort": "low"}}
    if not stream:
        return await bounded(client.responses.create(**kw))

    async def run():
        events = [ev async for ev in await client.responses.create(stream=True, **kw)]
        assert events[-1].type == "response.completed"
        return events[-1].response
    return await bounded(run())


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("model", ["claude-redacted", "gemini3"])
async def test_tool_loop_by_item_reference_succeeds(client, model, stream):
    """The Vercel AI SDK's way with `store` on: reasoning items by reference, calls inline."""
    first = await first_response(client, model, stream)
    items = [{"type": "item_reference", "id": o.id} if o.type == "reasoning" else o.model_dump(exclude_none=True)
             for o in first.output]
    assert any(i["type"] == "item_reference" for i in items)
    outputs = [o.model_dump(exclude_none=True) for o in first.output]
    second = await turn(client, model, ASK + items + results(outputs), stream)
    assert "".join(c["text"] for o in second if o["type"] == "message" for c in o["content"]) == "echo: sunny"


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("model", ["claude", "gemini3"])
async def test_tool_loop_by_previous_response_id_succeeds(client, model, stream):
    first = await first_response(client, model, stream)
    outputs = [o.model_dump(exclude_none=True) for o in first.output]
    second = await bounded(client.responses.create(model=model, previous_response_id=first.id, tools=WEATHER,
                                                   reasoning={"effort": "low"}, input=results(outputs)))
    assert second.output_text == "echo: sunny"


# -- Chat Completions: Gemini's call signature on the tool call (Google's extra_content convention) --

CHAT_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER[0]["parameters"]}}]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
async def test_chat_completions_tool_loop_on_gemini3_keeps_the_call_signature(client, stream):
    kw = {"model": "gemini3", "messages": ASK, "tools": CHAT_TOOLS, "reasoning_effort": "low"}
    if not stream:
        first = await bounded(client.chat.completions.create(**kw))
        message = first.choices[0].message  # kept as returned: the SDK keeps extra fields
        (call,) = message.tool_calls
        assert call.model_extra["extra_content"]["google"]["thought_signature"]
    else:
        async def run():
            calls: dict[int, dict] = {}
            async for chunk in await client.chat.completions.create(stream=True, **kw):
                for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                    call = calls.setdefault(tc.index, {"type": "function", "function": {"arguments": ""}})
                    call.update({k: v for k, v in (("id", tc.id), ("extra_content", tc.model_extra.get(
                        "extra_content"))) if v})
                    if tc.function and tc.function.name:
                        call["function"]["name"] = tc.function.name
                    call["function"]["arguments"] += (tc.function.arguments or "") if tc.function else ""
            return {"role": "assistant", "tool_calls": [calls[i] for i in sorted(calls)]}
        message = await bounded(run())
        call = message["tool_calls"][0]
        assert call["extra_content"]["google"]["thought_signature"]
    call_id = call.id if not stream else call["id"]
    history = ASK + [message, {"role": "tool", "tool_call_id": call_id, "content": "sunny"}]
    second = await bounded(client.chat.completions.create(model="gemini3", messages=history, tools=CHAT_TOOLS))
    assert second.choices[0].message.content == "echo: sunny"
    # the same history without the signature is Gemini 3's 400
    bare = ASK + [{"role": "assistant", "tool_calls": [{"id": call_id, "type": "function", "function": {
        "name": "get_weather", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": call_id, "content": "sunny"}]
    with pytest.raises(openai.BadRequestError) as info:
        await bounded(client.chat.completions.create(model="gemini3", messages=bare, tools=CHAT_TOOLS))
    assert "missing a thought_signature" in info.value.message


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("model", ["claude", "claude-redacted"])
async def test_chat_completions_tool_loop_on_anthropic_keeps_its_thinking(client, model, stream):
    kw = {"model": model, "messages": ASK, "tools": CHAT_TOOLS, "reasoning_effort": "low"}
    if not stream:
        message = (await bounded(client.chat.completions.create(**kw))).choices[0].message
        call_id = message.tool_calls[0].id
        assert message.model_extra["reasoning_details"][0]["signature"]
    else:
        async def run():
            details, calls = [], {}
            async for chunk in await client.chat.completions.create(stream=True, **kw):
                delta = chunk.choices[0].delta if chunk.choices else None
                details += (delta.model_extra or {}).get("reasoning_details") or [] if delta else []
                for tc in (delta.tool_calls or []) if delta else []:
                    call = calls.setdefault(tc.index, {"type": "function", "function": {"arguments": ""}})
                    if tc.id:
                        call["id"], call["function"]["name"] = tc.id, tc.function.name
                    call["function"]["arguments"] += tc.function.arguments or ""
            return {"role": "assistant", "reasoning_details": details, "tool_calls": [calls[i] for i in sorted(calls)]}
        message = await bounded(run())
        call_id = message["tool_calls"][0]["id"]
        assert len(message["reasoning_details"]) == (2 if "redacted" in model else 1)
    tool = {"role": "tool", "tool_call_id": call_id, "content": "sunny"}
    second = await bounded(client.chat.completions.create(model=model, messages=ASK + [message, tool],
                                                          tools=CHAT_TOOLS, reasoning_effort="low"))
    assert second.choices[0].message.content == "echo: sunny"
    bare = {"role": "assistant", "tool_calls": [{"id": call_id, "type": "function",
                                                 "function": {"name": "get_weather", "arguments": "{}"}}]}
    with pytest.raises(openai.BadRequestError) as info:
        await bounded(client.chat.completions.create(model=model, messages=ASK + [bare, tool], tools=CHAT_TOOLS,
                                                     reasoning_effort="low"))
    assert "Expected `thinking` or `redacted_thinking`" in info.value.message
