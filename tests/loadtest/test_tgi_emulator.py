"""The TGI / HF Inference emulator, checked with huggingface_hub's AsyncInferenceClient (and raw HTTP
where the client hides the wire shape)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import (
    GenerationError,
    HfHubHTTPError,
    OverloadedError,
    ValidationError,
)

from loadtest.emulators.tgi import create_app

CHATML = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
async def url(aiohttp_server):
    server = await aiohttp_server(create_app(), host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


def client(url: str, scenario: str | None = None) -> AsyncInferenceClient:
    headers = {"x-emulate": scenario} if scenario else None
    return AsyncInferenceClient(model=url, headers=headers, timeout=10)


async def test_text_generation_details(url):
    out = await client(url).text_generation(CHATML, details=True, max_new_tokens=50)
    assert out.generated_text == "echo: hello there"
    assert out.details.finish_reason == "eos_token"
    assert out.details.generated_tokens > 0


async def test_text_generation_plain_string(url):
    assert await client(url).text_generation(CHATML) == "echo: hello there"


async def test_stream_details_last_event_has_full_text(url):
    events = [e async for e in await client(url, "chunks=3").text_generation(CHATML, details=True, stream=True)]
    texts = [e.token.text for e in events if not e.token.special]
    assert "".join(texts) == "echo: hello there"
    assert events[-1].token.special and events[-1].token.text == "</s>"
    assert all(e.generated_text is None for e in events[:-1])
    assert events[-1].generated_text == "echo: hello there"
    assert events[-1].details.finish_reason == "eos_token"
    assert events[-1].details.input_length > 0


async def test_stream_tokens_only(url):
    tokens = [t async for t in await client(url, "chunks=2").text_generation(CHATML, stream=True)]
    assert "".join(tokens[:-1]) == "echo: hello there"


async def test_stop_sequence_kept_in_output(url):
    out = await client(url, "text=one_two_three").text_generation("x", details=True, stop=["two"])
    assert out.generated_text == "one two"
    assert out.details.finish_reason == "stop_sequence"


async def test_stream_stop_sequence_ends_on_text_token(url):
    c = client(url, "text=one_two_three,chunks=7")
    events = [e async for e in await c.text_generation("x", details=True, stream=True, stop=["two"])]
    assert events[-1].generated_text == "one two"
    assert not events[-1].token.special
    assert events[-1].details.finish_reason == "stop_sequence"


async def test_max_new_tokens_gives_length(url):
    out = await client(url, "text=" + "word_" * 40).text_generation("x", details=True, max_new_tokens=3)
    assert out.details.finish_reason == "length"
    assert len(out.generated_text) <= 12
    out = await client(url, "max_tokens").text_generation(CHATML, details=True)
    assert out.details.finish_reason == "length"


async def test_usage_scenario_and_headers(url):
    async with aiohttp.ClientSession() as s:
        async with s.post(
            url + "/generate",
            json={"inputs": "x", "parameters": {"details": True}},
            headers={"x-emulate": "usage_in=11,usage_out=5"},
        ) as r:
            body = await r.json()
            assert r.headers["x-prompt-tokens"] == "11"
    assert body["details"]["generated_tokens"] == 5


async def test_generate_object_and_compat_list(url):
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/generate", json={"inputs": CHATML}) as r:
            assert (await r.json()) == {"generated_text": "echo: hello there"}
        async with s.post(url + "/", json={"inputs": CHATML, "stream": False}) as r:
            assert (await r.json()) == [{"generated_text": "echo: hello there"}]
        async with s.get(url + "/info") as r:
            assert (await r.json())["max_stop_sequences"] == 4
        async with s.get(url + "/health") as r:
            assert r.status == 200


async def test_raw_stream_wire_shape(url):
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/generate_stream", json={"inputs": CHATML, "parameters": {"details": True}}) as r:
            raw = await r.read()
    frames = [f for f in raw.split(b"\n\n") if f]
    assert all(f.startswith(b"data:{") for f in frames)  # TGI writes no space after the colon
    assert b"[DONE]" not in raw
    assert json.loads(frames[0][5:])["index"] == 1


@pytest.mark.parametrize(
    "status, exc",
    [(422, ValidationError), (424, GenerationError), (429, OverloadedError)],
)
async def test_error_types(url, status, exc):
    with pytest.raises(exc):
        await client(url, f"status={status}").text_generation(CHATML)


async def test_error_body_and_retry_after(url):
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/generate", json={"inputs": "x"}, headers={"x-emulate": "status=429,retry_after=3"}) as r:
            assert r.status == 429
            assert r.headers["retry-after"] == "3"
            assert (await r.json())["error_type"] == "overloaded"


async def test_context_length_wording(url):
    with pytest.raises(ValidationError, match="must be <="):
        await client(url, "context_length").text_generation(CHATML)


async def test_in_band_error_after(url):
    c = client(url, "error_after=1,chunks=4")
    seen = []
    with pytest.raises(GenerationError):
        async for ev in await c.text_generation(CHATML, stream=True, details=True):
            seen.append(ev)
    assert len(seen) == 1


async def test_truncate_after_ends_without_final_event(url):
    c = client(url, "truncate_after=2,chunks=4")
    events = [e async for e in await c.text_generation(CHATML, stream=True, details=True)]
    assert len(events) == 2
    assert all(e.generated_text is None for e in events)


async def test_reset_after_breaks_the_connection(url):
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.post(url + "/generate_stream", json={"inputs": CHATML}, headers={"x-emulate": "reset_after=1"}) as r:
                await r.read()


async def test_malformed(url):
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/generate", json={"inputs": "x"}, headers={"x-emulate": "malformed"}) as r:
            with pytest.raises(ValueError):
                json.loads(await r.text())
        async with s.post(url + "/generate_stream", json={"inputs": "x"}, headers={"x-emulate": "malformed"}) as r:
            frames = [f for f in (await r.read()).split(b"\n\n") if f]
    with pytest.raises(ValueError):
        json.loads(frames[-1][5:])


async def test_hang_and_first_byte(url):
    async with aiohttp.ClientSession() as s:
        with pytest.raises(asyncio.TimeoutError):
            async with s.post(url + "/generate", json={"inputs": "x"}, headers={"x-emulate": "hang"},
                              timeout=aiohttp.ClientTimeout(total=0.3)) as r:
                await r.read()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with s.post(url + "/generate", json={"inputs": "x"}, headers={"x-emulate": "first_byte=0.2"}) as r:
            assert r.status == 200
        assert loop.time() - t0 >= 0.2


async def test_tools_and_reasoning_text(url):
    out = await client(url, "tools,reasoning").text_generation('"function": {"name": "lookup"}')
    assert out.startswith("<think>")
    assert '"name": "lookup"' in out and "<tool_call>" in out


async def test_serverless_model_path_and_loading(url):
    c = AsyncInferenceClient(model=url + "/models/org/llama", timeout=10)
    assert await c.text_generation(CHATML) == "echo: hello there"
    events = [e async for e in await c.text_generation(CHATML, stream=True, details=True)]
    assert events[-1].generated_text == "echo: hello there"
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/models/org/llama::status=503,retry_after=7", json={"inputs": "x"}) as r:
            assert r.status == 503
            body = await r.json()
    assert body == {"error": "Model org/llama is currently loading", "estimated_time": 7.0}
    with pytest.raises(HfHubHTTPError):
        await AsyncInferenceClient(model=url + "/models/org/llama::status=503", timeout=10).text_generation("x")


async def test_feature_extraction(url):
    c = AsyncInferenceClient(model=url + "/models/sentence-transformers/all-MiniLM-L6-v2", timeout=10)
    one = await c.feature_extraction("hello")
    assert one.shape == (8,)
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/models/any-model", json={"inputs": ["a", "b"]}) as r:
            vectors = await r.json()
    assert len(vectors) == 2 and vectors[0] != vectors[1] and len(vectors[0]) == 8
    assert [round(x, 4) for x in vectors[0]] == [round(float(x), 4) for x in (await c.feature_extraction("a"))]


async def test_json_grammar_constrains_the_reply(url):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    out = await client(url).text_generation(CHATML, grammar={"type": "json", "value": schema})
    assert json.loads(out) == {"city": "city-value"}
    out = await client(url).text_generation(CHATML, grammar={"type": "json", "value": {}})
    assert json.loads(out) == {"answer": "echo: hello there"}
