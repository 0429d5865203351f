"""The llama.cpp emulator against the shapes documented in llama.cpp's tools/server/README.md (there is
no official Python client, so raw aiohttp requests)."""

import asyncio
import json

import aiohttp
import pytest

from loadtest.emulators.behaviour import LatencyProfile
from loadtest.emulators.llamacpp import create_app, last_user_text

CHATML = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n"
FINAL_KEYS = {"content", "stop", "model", "stop_type", "stopping_word", "tokens_evaluated", "tokens_predicted",
              "tokens_cached", "timings", "generation_settings", "prompt", "truncated"}


@pytest.fixture
async def server(aiohttp_server):
    return await aiohttp_server(create_app(), host="127.0.0.1")


async def post(server, body: dict, scenario: str | None = None, path: str = "/completion"):
    headers = {"x-emulate": scenario} if scenario else {}
    async with aiohttp.ClientSession() as s:
        async with s.post(server.make_url(path), json=body, headers=headers) as r:
            return r.status, dict(r.headers), await r.read()


def sse_events(raw: bytes) -> list[tuple[str, dict]]:
    """Split a llama-server stream into (field, json) pairs, checking the blank-line framing."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        field, _, value = block.partition(": ")
        out.append((field, json.loads(value)))
    assert raw.endswith(b"\n\n")
    return out


@pytest.mark.parametrize(
    "prompt,expected",
    [
        (CHATML, "hello there"),
        ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi llama<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n", "hi llama"),
        ("<s>[INST] bonjour [/INST]", "bonjour"),
        ("<start_of_turn>user\nhey gemma<end_of_turn>\n<start_of_turn>model\n", "hey gemma"),
        ("Once upon a time", "Once upon a time"),
    ],
)
def test_last_user_text(prompt, expected):
    assert last_user_text(prompt) == expected


async def test_completion_non_stream(server):
    status, headers, raw = await post(server, {"prompt": CHATML, "n_predict": 64, "stop": ["<|im_end|>"]})
    body = json.loads(raw)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert FINAL_KEYS <= body.keys()
    assert body["content"] == "echo: hello there" and body["stop"] is True
    assert body["stop_type"] == "eos" and body["stopping_word"] == ""
    assert body["tokens_evaluated"] > 0 and body["tokens_predicted"] > 0
    t = body["timings"]
    assert t["prompt_n"] + t["cache_n"] == body["tokens_evaluated"] and t["predicted_n"] == body["tokens_predicted"]


async def test_completions_alias_and_model_field_scenario(server):
    status, _, raw = await post(server, {"prompt": "x", "model": "any::text=from_field"}, path="/completions")
    assert status == 200 and json.loads(raw)["content"] == "from field"


async def test_stream_events(server):
    status, headers, raw = await post(server, {"prompt": CHATML, "stream": True}, "chunks=3")
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(raw)
    assert all(field == "data" for field, _ in events)
    assert [e["stop"] for _, e in events] == [False, False, False, True]
    assert "".join(e["content"] for _, e in events) == "echo: hello there"
    final = events[-1][1]
    assert final["content"] == "" and FINAL_KEYS <= final.keys() and final["stop_type"] == "eos"


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_word_is_excluded_and_reported(server, stream):
    _, _, raw = await post(server, {"prompt": CHATML, "stop": ["zzz", " there"], "stream": stream})
    final = sse_events(raw)[-1][1] if stream else json.loads(raw)
    content = "".join(e["content"] for _, e in sse_events(raw)) if stream else final["content"]
    assert content == "echo: hello"
    assert (final["stop_type"], final["stopping_word"]) == ("word", " there")


@pytest.mark.parametrize("body_extra,scenario", [({"n_predict": 2}, None), ({}, "max_tokens")])
async def test_limit(server, body_extra, scenario):
    _, _, raw = await post(server, {"prompt": CHATML, **body_extra}, scenario)
    body = json.loads(raw)
    assert body["stop_type"] == "limit"
    if body_extra:
        assert body["content"] == "echo: he"


async def test_text_reasoning_and_usage(server):
    _, _, raw = await post(server, {"prompt": "q"}, "text=ok,reasoning,usage_in=9,usage_out=4")
    body = json.loads(raw)
    assert body["content"].startswith("<think>") and body["content"].endswith("ok")
    assert (body["tokens_evaluated"], body["tokens_predicted"]) == (9, 4)


@pytest.mark.parametrize(
    "scenario,status,type_",
    [
        ("status=400", 400, "invalid_request_error"),
        ("status=401", 401, "authentication_error"),
        ("status=404", 404, "not_found_error"),
        ("status=500", 500, "server_error"),
        ("status=503,retry_after=4", 503, "unavailable_error"),
        ("context_length", 400, "exceed_context_size_error"),
    ],
)
async def test_errors(server, scenario, status, type_):
    got, headers, raw = await post(server, {"prompt": "x"}, scenario)
    err = json.loads(raw)["error"]
    assert got == status and err["code"] == status and err["type"] == type_ and err["message"]
    if "retry_after" in scenario:
        assert headers["Retry-After"] == "4"
    if type_ == "exceed_context_size_error":
        assert "exceeds the available context size" in err["message"] and err["n_ctx"] < err["n_prompt_tokens"]


async def test_error_after_is_an_inband_error_event(server):
    _, _, raw = await post(server, {"prompt": CHATML, "stream": True}, "error_after=2")
    events = sse_events(raw)
    assert len(events) == 3 and events[-1][1]["error"]["type"] == "server_error"
    assert not any(e.get("stop") for _, e in events)


async def test_truncate_after_has_no_stop_event(server):
    _, _, raw = await post(server, {"prompt": CHATML, "stream": True}, "truncate_after=2")
    events = sse_events(raw)
    assert len(events) == 2 and not any(e["stop"] for _, e in events)


async def test_reset_after_aborts(server):
    with pytest.raises(aiohttp.ClientError):
        await post(server, {"prompt": CHATML, "stream": True}, "reset_after=1")


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed(server, stream):
    _, _, raw = await post(server, {"prompt": CHATML, "stream": stream}, "malformed")
    last = raw.decode().strip().split("\n\n")[-1].removeprefix("data: ")
    with pytest.raises(json.JSONDecodeError):
        json.loads(last)


async def test_hang(server):
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(post(server, {"prompt": "x"}, "hang"), 0.3)


async def test_first_byte_chunk_delay_and_profile(server, aiohttp_server):
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await post(server, {"prompt": CHATML, "stream": True}, "first_byte=0.2,chunk_delay=0.05,chunks=3")
    assert loop.time() - t0 >= 0.2 + 3 * 0.05 - 0.01
    slow = await aiohttp_server(create_app(LatencyProfile("slow", p50=0.15, p95=0.15)), host="127.0.0.1")
    t0 = loop.time()
    await post(slow, {"prompt": "x"})
    assert loop.time() - t0 >= 0.14


async def test_bad_requests(server):
    status, _, raw = await post(server, {"n_predict": 1})
    assert status == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"


async def test_health_props_tokenize(server):
    async with aiohttp.ClientSession() as s:
        async with s.get(server.make_url("/health")) as r:
            assert r.status == 200 and await r.json() == {"status": "ok"}
        async with s.get(server.make_url("/health"), headers={"x-emulate": "status=503"}) as r:
            assert r.status == 503 and (await r.json())["error"]["message"] == "Loading model"
        async with s.get(server.make_url("/props")) as r:
            props = await r.json()
            assert props["default_generation_settings"]["n_ctx"] > 0 and props["chat_template"]
        async with s.post(server.make_url("/tokenize"), json={"content": "hello world!"}) as r:
            tokens = (await r.json())["tokens"]
            assert len(tokens) == 3 and all(isinstance(t, int) for t in tokens)


async def test_json_schema_constrains_the_reply(server):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    status, _, raw = await post(server, {"prompt": "hi", "json_schema": schema})
    assert status == 200 and json.loads(json.loads(raw)["content"]) == {"n": 1}
