"""The Gemini emulator checked against the official google-genai async client (plus raw HTTP for what
the SDK never sends: no key, the JSON-array stream framing, transport faults)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from google import genai
from google.genai import errors, types

from loadtest.emulators.behaviour import LatencyProfile
from loadtest.emulators.gemini import create_app

TOOLS = [types.Tool(function_declarations=[types.FunctionDeclaration(
    name="lookup", description="Look up", parameters_json_schema={
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}})])]


@pytest.fixture
async def base_url(aiohttp_server):
    server = await aiohttp_server(create_app())
    return str(server.make_url("")).rstrip("/")


def make_client(base_url: str, key: str = "test-key") -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base_url, api_version="v1beta", timeout=10_000))


@pytest.fixture
async def client(base_url):
    c = make_client(base_url)
    yield c.aio
    await c.aio.aclose()


async def bounded(coro):
    return await asyncio.wait_for(coro, 10)


async def collect(client, model: str, contents="hello there", config=None) -> list[types.GenerateContentResponse]:
    async def run():
        return [c async for c in await client.models.generate_content_stream(model=model, contents=contents, config=config)]
    return await bounded(run())


async def test_generate_echoes_last_user_text(client):
    r = await bounded(client.models.generate_content(model="gemini-2.5-flash", contents="hello there"))
    assert r.text == "echo: hello there"
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.model_version == "gemini-2.5-flash" and r.response_id
    u = r.usage_metadata
    assert u.prompt_token_count > 0 and u.total_token_count == u.prompt_token_count + u.candidates_token_count


async def test_stream_chunks_and_final_usage(client):
    chunks = await collect(client, "gemini-2.5-flash::chunks=5")
    assert len(chunks) == 5 and "".join(c.text for c in chunks) == "echo: hello there"
    assert [c.candidates[0].finish_reason for c in chunks][-1] == types.FinishReason.STOP
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].usage_metadata.candidates_token_count > 0


async def test_reasoning_thought_parts_and_signature(client):
    r = await bounded(client.models.generate_content(model="gemini-2.5-flash::reasoning", contents="hi"))
    parts = r.candidates[0].content.parts
    assert parts[0].thought is True and parts[0].text
    assert parts[-1].text == "echo: hi" and parts[-1].thought_signature.startswith(b"emu-sig:")
    u = r.usage_metadata
    assert u.thoughts_token_count > 0
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count + u.thoughts_token_count
    chunks = await collect(client, "gemini-2.5-flash::reasoning,chunks=3", "hi")
    assert chunks[0].candidates[0].content.parts[0].thought is True
    assert "".join(c.text or "" for c in chunks[1:]) == "echo: hi"


async def test_tool_call_whole_with_signature_and_round_trip(client):
    config = types.GenerateContentConfig(tools=TOOLS, tool_config=types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(mode="ANY")))
    r = await bounded(client.models.generate_content(model="gemini-2.5-flash::reasoning", contents="weather?", config=config))
    call = r.function_calls[0]
    assert call.name == "lookup" and call.args == {"city": "Paris", "days": 1} and call.id is None
    history = [types.Content(role="user", parts=[types.Part(text="weather?")]), r.candidates[0].content,
               types.Content(role="user", parts=[types.Part.from_function_response(name="lookup", response={"output": "sunny"})])]
    follow = await bounded(client.models.generate_content(model="gemini-2.5-flash", contents=history))
    assert follow.text == "echo: sunny"
    chunks = await collect(client, "gemini-2.5-flash::tools,chunks=4", "weather?", types.GenerateContentConfig(tools=TOOLS))
    assert len(chunks) == 1 and chunks[0].function_calls[0].args == {"city": "Paris", "days": 1}


async def test_function_responses_must_match_the_calls(client):
    history = [types.Content(role="user", parts=[types.Part(text="q")]),
               types.Content(role="user", parts=[types.Part.from_function_response(name="f", response={"output": "x"})])]
    with pytest.raises(errors.ClientError) as e:
        await bounded(client.models.generate_content(model="gemini-2.5-flash", contents=history))
    assert e.value.code == 400 and "function response parts" in e.value.message


async def test_max_tokens_and_usage_overrides(client):
    r = await bounded(client.models.generate_content(model="g::max_tokens,usage_in=11,usage_out=22", contents="x"))
    assert r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert (r.usage_metadata.prompt_token_count, r.usage_metadata.candidates_token_count) == (11, 22)


async def test_text_scenario_via_header(base_url):
    c = genai.Client(api_key="k", http_options=types.HttpOptions(
        base_url=base_url, api_version="v1beta", headers={"x-emulate": "text=fixed_reply"}, timeout=10_000))
    try:
        r = await bounded(c.aio.models.generate_content(model="gemini-2.5-flash", contents="x"))
        assert r.text == "fixed reply"
    finally:
        await c.aio.aclose()


async def test_count_tokens_and_embeddings(client):
    n = await bounded(client.models.count_tokens(model="gemini-2.5-flash", contents="some words to count"))
    assert n.total_tokens > 0
    e = await bounded(client.models.embed_content(model="gemini-embedding-001", contents=["a", "b"],
                                                  config=types.EmbedContentConfig(output_dimensionality=8)))
    assert [len(x.values) for x in e.embeddings] == [8, 8] and e.embeddings[0].values != e.embeddings[1].values


@pytest.mark.parametrize("status,name,cls", [(400, "INVALID_ARGUMENT", errors.ClientError), (404, "NOT_FOUND", errors.ClientError),
                                             (429, "RESOURCE_EXHAUSTED", errors.ClientError), (500, "INTERNAL", errors.ServerError),
                                             (503, "UNAVAILABLE", errors.ServerError), (504, "DEADLINE_EXCEEDED", errors.ServerError)])
async def test_status_scenarios(client, status, name, cls):
    with pytest.raises(cls) as e:
        await bounded(client.models.generate_content(model=f"g::status={status}", contents="x"))
    assert e.value.code == status and e.value.status == name


async def test_context_length_wording(client):
    with pytest.raises(errors.ClientError) as e:
        await bounded(client.models.generate_content(model="g::context_length", contents="x"))
    assert e.value.status == "INVALID_ARGUMENT" and "exceeds the maximum number of tokens" in e.value.message


async def test_invalid_key_is_400_api_key_invalid(base_url):
    c = make_client(base_url, key="invalid")
    try:
        with pytest.raises(errors.ClientError) as e:
            await bounded(c.aio.models.generate_content(model="g", contents="x"))
        assert e.value.code == 400 and e.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    finally:
        await c.aio.aclose()


async def test_error_after_is_an_in_band_error(client):
    with pytest.raises(errors.ServerError) as e:
        await collect(client, "g::error_after=2,chunks=4")
    assert e.value.code == 500 and e.value.status == "INTERNAL"


async def test_list_models(client):
    names = [m.name async for m in await bounded(client.models.list())]
    assert "models/gemini-2.5-flash" in names


# -- raw HTTP: what the SDK does not exercise -------------------------------------------------------

BODY = {"contents": [{"role": "user", "parts": [{"text": "raw"}]}]}


async def post(url: str, path: str, body=BODY, headers=None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        async with s.post(url + path, json=body, headers={"x-goog-api-key": "k"} if headers is None else headers) as r:
            return r.status, await r.read()


async def test_no_key_is_403_and_query_key_works(base_url):
    status, body = await post(base_url, "/v1beta/models/g:generateContent", headers={})
    assert status == 403 and json.loads(body)["error"]["status"] == "PERMISSION_DENIED"
    status, body = await post(base_url, "/v1beta/models/g:generateContent?key=abc", headers={})
    assert status == 200 and json.loads(body)["candidates"][0]["content"]["parts"][0]["text"] == "echo: raw"


async def test_url_encoded_scenario_separator(base_url):
    status, body = await post(base_url, "/v1/models/g%3A%3Atext=encoded:generateContent")
    assert status == 200 and json.loads(body)["candidates"][0]["content"]["parts"][0]["text"] == "encoded"


async def test_json_array_framing_without_alt_sse(base_url):
    status, body = await post(base_url, "/v1beta/models/g::chunks=3:streamGenerateContent")
    chunks = json.loads(body)
    assert status == 200 and isinstance(chunks, list) and len(chunks) == 3
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "echo: raw"
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.parametrize("scenario", ["truncate_after=1", "malformed"])
async def test_stream_faults_leave_no_finish(base_url, scenario):
    status, body = await post(base_url, f"/v1beta/models/g::chunks=3,{scenario}:streamGenerateContent?alt=sse")
    events = [line[6:] for line in body.split(b"\r\n") if line.startswith(b"data: ")]
    assert status == 200 and b"finishReason" not in events[-1]
    if scenario == "malformed":
        with pytest.raises(ValueError):
            json.loads(events[-1])


async def test_reset_after_aborts_the_connection(base_url):
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(base_url, "/v1beta/models/g::chunks=3,reset_after=1:streamGenerateContent?alt=sse")


async def test_malformed_non_stream_body(base_url):
    status, body = await post(base_url, "/v1beta/models/g::malformed:generateContent")
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)


async def test_hang_and_first_byte(base_url):
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(post(base_url, "/v1beta/models/g::hang:generateContent"), 0.3)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await post(base_url, "/v1beta/models/g::first_byte=0.2,chunk_delay=0.05,chunks=3:streamGenerateContent?alt=sse")
    assert loop.time() - t0 >= 0.3


async def test_profile_first_byte(aiohttp_server):
    server = await aiohttp_server(create_app(LatencyProfile(name="slow", p50=0.2, p95=0.2)))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    status, _ = await post(str(server.make_url("")).rstrip("/"), "/v1beta/models/g:generateContent")
    assert status == 200 and loop.time() - t0 >= 0.2


async def test_stop_sequences_and_max_output_tokens_cut_the_reply(client):
    r = await bounded(client.models.generate_content(model="gemini-2.5-flash", contents="alpha beta",
                                                     config=types.GenerateContentConfig(stop_sequences=["beta"])))
    assert r.text == "echo: alpha " and r.candidates[0].finish_reason == types.FinishReason.STOP
    r = await bounded(client.models.generate_content(model="gemini-2.5-flash", contents="one two three four",
                                                     config=types.GenerateContentConfig(max_output_tokens=2)))
    assert r.text == "echo: on" and r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


async def test_function_calls_follow_the_prompt_and_the_calling_mode(client):
    tools = [types.Tool(function_declarations=[*TOOLS[0].function_declarations,
                                               types.FunctionDeclaration(name="clock", parameters_json_schema={"type": "object"})])]
    r = await bounded(client.models.generate_content(model="gemini-2.5-flash", contents="use lookup and clock",
                                                     config=types.GenerateContentConfig(tools=tools)))
    assert [c.name for c in r.function_calls] == ["lookup", "clock"]
    none = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="NONE"))
    r = await bounded(client.models.generate_content(model="gemini-2.5-flash", contents="use lookup",
                                                     config=types.GenerateContentConfig(tools=tools, tool_config=none)))
    assert r.function_calls is None and r.text == "echo: use lookup"
    named = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY", allowed_function_names=["clock"]))
    r = await bounded(client.models.generate_content(model="gemini-2.5-flash", contents="hi",
                                                     config=types.GenerateContentConfig(tools=tools, tool_config=named)))
    assert [c.name for c in r.function_calls] == ["clock"]


async def test_json_mime_type_and_schema_make_the_reply_json(client):
    config = types.GenerateContentConfig(response_mime_type="application/json",
                                         response_json_schema={"type": "object", "properties": {"city": {"type": "string"}}})
    r = await bounded(client.models.generate_content(model="gemini-2.5-flash", contents="x", config=config))
    assert r.parsed == {"city": "city-value"}


# -- Gemini 3 checks the thought signatures of the current turn -------------------------------------


async def _gemini3_turn(client, stream: bool):
    config = types.GenerateContentConfig(tools=TOOLS)
    if stream:
        chunks = await collect(client, "gemini-3-pro-preview", "use lookup please", config)
        parts = [p for c in chunks for p in c.candidates[0].content.parts]
        return types.Content(role="model", parts=parts)
    r = await bounded(client.models.generate_content(model="gemini-3-pro-preview", contents="use lookup please",
                                                     config=config))
    return r.candidates[0].content


def _history(model_turn):
    return [types.Content(role="user", parts=[types.Part(text="use lookup please")]), model_turn,
            types.Content(role="user", parts=[types.Part.from_function_response(name="lookup",
                                                                                response={"output": "sunny"})])]


@pytest.mark.parametrize("stream", [False, True])
async def test_gemini3_tool_loop_with_its_signature_succeeds(client, stream):
    turn = await _gemini3_turn(client, stream)
    (call,) = [p for p in turn.parts if p.function_call]
    assert call.thought_signature.startswith(b"emu-sig:")
    follow = await bounded(client.models.generate_content(model="gemini-3-pro-preview", contents=_history(turn),
                                                          config=types.GenerateContentConfig(tools=TOOLS)))
    assert follow.text == "echo: sunny"


@pytest.mark.parametrize("signature", [None, b"emu-sig:forged-signature-bytes!!", b"elsewhere"],
                         ids=["missing", "forged", "foreign"])
async def test_gemini3_call_without_its_signature_is_a_400(client, signature):
    turn = await _gemini3_turn(client, stream=False)
    turn.parts[0].thought_signature = signature
    with pytest.raises(errors.ClientError) as e:
        await bounded(client.models.generate_content(model="gemini-3-pro-preview", contents=_history(turn)))
    assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT"
    if signature is None:
        assert e.value.message.startswith("Function call is missing a thought_signature in functionCall parts.")
        assert "`default_api:lookup`" in e.value.message
    else:
        assert e.value.message == "Corrupted thought signature."
    # Gemini 2.5 does not enforce signatures; nor does a later turn for this one (a user text follows it)
    ok = await bounded(client.models.generate_content(model="gemini-2.5-flash", contents=_history(turn)))
    later = _history(turn) + [types.Content(role="model", parts=[types.Part(text="sunny")]),
                              types.Content(role="user", parts=[types.Part(text="thanks")])]
    done = await bounded(client.models.generate_content(model="gemini-3-pro-preview", contents=later))
    assert ok.text == "echo: sunny" and done.text == "echo: thanks"


async def test_signature_moved_to_another_call_is_corrupted(client):
    turn = await _gemini3_turn(client, stream=False)
    turn.parts[0].function_call.name = "other"
    with pytest.raises(errors.ClientError) as e:
        await bounded(client.models.generate_content(model="gemini-3-pro-preview", contents=_history(turn)))
    assert e.value.message == "Corrupted thought signature."
