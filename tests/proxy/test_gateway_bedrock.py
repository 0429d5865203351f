"""Bedrock-specific behaviour through the running gateway (the common rows are in
test_gateway_cloud.py): embeddings through InvokeModel (a Titan list becomes several signed calls),
ModelNotReady retried, context-length fallbacks, in-stream exceptions, Claude reasoning with its
signature round-tripped, images, the credential chain, temporary credentials and Bedrock API keys.
The emulator recomputes every signature over the host actually called (its base_url)."""

from __future__ import annotations

import asyncio
import base64

import anthropic
import openai
import pytest

from loadtest.emulators import bedrock as emu
from tests.conftest import proxy_url

CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
KEYS = {"aws_access_key_id": emu.ACCESS_KEY_ID, "aws_secret_access_key": emu.SECRET_ACCESS_KEY}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def bounded(coro):
    return asyncio.wait_for(coro, 15)


def backend(url: str, **extra) -> dict:
    return {"provider": "bedrock", "region": "eu-central-1", "base_url": url, **extra}


async def clients(start_proxy, config, env=None):
    server = await start_proxy(config, env)
    return (openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="k", max_retries=0),
            anthropic.AsyncAnthropic(base_url=proxy_url(server), api_key="k", max_retries=0))


@pytest.fixture
async def gateway(start_emulator, start_proxy):
    url = await start_emulator("bedrock")
    models = [
        {"name": "claude", "backend": "b", "model": CLAUDE},
        {"name": "thinker", "backend": "b", "model": CLAUDE + "::reasoning"},
        {"name": "titan", "backend": "b", "model": "amazon.titan-embed-text-v2:0"},
        {"name": "cohere-embed", "backend": "b", "model": "cohere.embed-english-v3"},
        {"name": "not-ready", "backend": "b", "model": CLAUDE + "::exception=ModelNotReadyException", "retries": 0,
         "fallbacks": ["claude"]},
        {"name": "long", "backend": "b", "model": CLAUDE + "::context_length", "context_window_fallbacks": ["claude"]},
        {"name": "broken", "backend": "b", "model": CLAUDE + "::error_after=2"},
        {"name": "corrupt", "backend": "b", "model": CLAUDE + "::malformed"},
        {"name": "quota", "backend": "b", "model": CLAUDE + "::exception=ServiceQuotaExceededException"},
        {"name": "denied", "backend": "b", "model": CLAUDE + "::status=403"},
    ]
    oai, ant = await clients(start_proxy, {"backends": {"b": backend(url, **KEYS)}, "models": models})
    yield oai, ant
    await oai.close()
    await ant.close()


async def test_titan_embeds_a_list_with_one_call_per_input(gateway):
    oai, _ = gateway
    r = await bounded(oai.embeddings.create(model="titan", input=["one", "two two", "three"], dimensions=256))
    assert [d.index for d in r.data] == [0, 1, 2] and {len(d.embedding) for d in r.data} == {256}
    single = await bounded(oai.embeddings.create(model="titan", input="two two", dimensions=256))
    assert single.data[0].embedding == r.data[1].embedding  # answers joined in input order
    assert r.usage.prompt_tokens == 1 + 2 + 2  # summed over the three calls


async def test_cohere_embed_with_usage_from_the_header(gateway):
    oai, _ = gateway
    r = await bounded(oai.embeddings.create(model="cohere-embed", input=["alpha", "beta"]))
    assert len(r.data) == 2 and len(r.data[0].embedding) == 1024
    assert r.usage.prompt_tokens == 2 + 1  # X-Amzn-Bedrock-Input-Token-Count (the emulator: ~4 chars a token)
    with pytest.raises(openai.BadRequestError):
        await bounded(oai.embeddings.create(model="cohere-embed", input=["x"], dimensions=8))


async def test_model_not_ready_is_retryable_and_falls_back(gateway):
    oai, _ = gateway
    r = await bounded(oai.chat.completions.create(model="not-ready", messages=[{"role": "user", "content": "hi"}]))
    assert r.choices[0].message.content == "echo: hi"


async def test_context_length_wordings_move_to_the_fallback(gateway):
    oai, _ = gateway
    r = await bounded(oai.chat.completions.create(model="long", messages=[{"role": "user", "content": "hi"}]))
    assert r.choices[0].message.content == "echo: hi"


async def test_quota_and_access_errors(gateway):
    oai, ant = gateway
    with pytest.raises(openai.RateLimitError):
        await bounded(oai.chat.completions.create(model="quota", messages=[{"role": "user", "content": "hi"}]))
    with pytest.raises(anthropic.PermissionDeniedError):
        await bounded(ant.messages.create(model="denied", max_tokens=8, messages=[{"role": "user", "content": "hi"}]))


async def test_in_stream_exception_becomes_an_in_stream_error(gateway):
    oai, ant = gateway
    stream = await bounded(oai.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}],
                                                       stream=True))
    got = []
    with pytest.raises(openai.APIError, match="unexpected error"):
        async for c in stream:
            got.append(c.choices[0].delta.content or "" if c.choices else "")
    assert "".join(got)  # the deltas before the exception event reached the client
    with pytest.raises(anthropic.APIStatusError):
        async with ant.messages.stream(model="corrupt", max_tokens=8, messages=[{"role": "user", "content": "hi"}]) as s:
            await bounded(s.get_final_message())


async def test_claude_reasoning_and_its_signature_round_trip(gateway):
    _, ant = gateway
    msgs = [{"role": "user", "content": "hello"}]
    async with ant.messages.stream(model="thinker", max_tokens=2048, messages=msgs,
                                   thinking={"type": "enabled", "budget_tokens": 1024}) as s:
        final = await bounded(s.get_final_message())
    thinking = final.content[0]
    assert thinking.type == "thinking" and thinking.thinking and thinking.signature
    assert final.content[1].text == "echo: hello"
    msgs += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
             {"role": "user", "content": "again"}]
    follow = await bounded(ant.messages.create(model="claude", max_tokens=2048, messages=msgs,
                                               thinking={"type": "enabled", "budget_tokens": 1024}))
    assert follow.content[-1].text == "echo: again"


async def test_images_go_inline(gateway):
    oai, _ = gateway
    content = [{"type": "text", "text": "what is this"},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]
    r = await bounded(oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": content}]))
    assert r.choices[0].message.content == "echo: what is this"
    with pytest.raises(openai.BadRequestError, match="not fetched"):
        await bounded(oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]))


async def chat_once(start_proxy, block, env=None) -> str:
    oai, ant = await clients(start_proxy, {"backends": {"b": block}, "models": [{"name": "m", "backend": "b", "model": CLAUDE}]}, env)
    try:
        r = await bounded(oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]))
        return r.choices[0].message.content
    finally:
        await oai.close()
        await ant.close()


async def test_temporary_credentials_need_their_session_token(start_emulator, start_proxy):
    url = await start_emulator("bedrock")
    temp = {"aws_access_key_id": emu.TEMP_ACCESS_KEY_ID, "aws_secret_access_key": emu.TEMP_SECRET_ACCESS_KEY}
    assert await chat_once(start_proxy, backend(url, **temp, aws_session_token="${AWS_SESSION_TOKEN:-}"),
                           {"AWS_SESSION_TOKEN": emu.SESSION_TOKEN}) == "echo: hi"
    with pytest.raises(openai.AuthenticationError):  # an empty token means none, and AWS wants one here
        await chat_once(start_proxy, backend(url, **temp, aws_session_token="${AWS_SESSION_TOKEN:-}"))


async def test_credential_chain_from_the_environment(start_emulator, start_proxy, monkeypatch, tmp_path):
    url = await start_emulator("bedrock")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", emu.ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", emu.SECRET_ACCESS_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    assert await chat_once(start_proxy, backend(url)) == "echo: hi"


async def test_wrong_secret_is_refused_as_aws_refuses_it(start_emulator, start_proxy):
    url = await start_emulator("bedrock")
    with pytest.raises(openai.AuthenticationError) as e:
        await chat_once(start_proxy, backend(url, aws_access_key_id=emu.ACCESS_KEY_ID, aws_secret_access_key="wrong"))
    assert "signature" in str(e.value) and url not in str(e.value)


async def test_bedrock_api_key_is_a_bearer_token(start_emulator, start_proxy):
    url = await start_emulator("bedrock")
    assert await chat_once(start_proxy, backend(url, api_key=emu.API_KEY)) == "echo: hi"


async def test_json_schema_response_format(gateway):
    oai, _ = gateway
    fmt = {"type": "json_schema", "json_schema": {"name": "place", "schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    r = await bounded(oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": "where?"}],
                                                  response_format=fmt))
    assert r.choices[0].message.content.replace(" ", "") == '{"city":"Paris"}'
