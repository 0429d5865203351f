"""The lean canned backend: event cuts, framing and the stream flag as pure functions; then, served on
127.0.0.1 with the emulators' recordings, checked with the official openai, anthropic and ollama
clients (JSON and stream), keep-alive, pipelining and unknown paths over a raw socket."""

from __future__ import annotations

import asyncio
import json

import anthropic
import ollama
import openai
import pytest

from loadtest.bench import lean_backend
from loadtest.bench.lean_backend import Recording

USER = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize(("body", "fmt", "reads"), [
    (b"data: a\n\ndata: b\n\n", "openai", [b"data: a\n\n", b"data: b\n\n"]),
    (b"data: a\r\n\r\ndata: b\r\n\r\n", "gemini", [b"data: a\r\n\r\n", b"data: b\r\n\r\n"]),
    (b"event: e\ndata: a\n\ndata: tail", "anthropic", [b"event: e\ndata: a\n\n", b"data: tail"]),
    (b'{"a":1}\n{"b":2}\n', "ollama", [b'{"a":1}\n', b'{"b":2}\n']),
])  # fmt: skip
def test_frames_cut_after_each_event(body, fmt, reads):
    assert lean_backend.frames(body, fmt) == reads
    assert b"".join(lean_backend.frames(body, fmt)) == body


@pytest.mark.parametrize(("body", "by_default", "stream"), [
    (b'{"model":"m","stream":true}', False, True),
    (b'{"model": "m", "stream": true}', False, True),
    (b'{"model":"m"}', False, False),
    (b'{"model":"m","stream":false}', False, False),
    (b'{"model":"m"}', True, True),  # Ollama: a stream unless the body says no
    (b'{"model":"m","stream":false}', True, False),
    (b'{"model": "m", "stream": false}', True, False),
])  # fmt: skip
def test_stream_flag_selects_the_recording(body, by_default, stream):
    assert lean_backend.wants_stream(body, by_default) is stream


def _dechunk(data: bytes) -> bytes:
    out, pos = b"", 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end], 16)
        if size == 0:
            assert data[end:] == b"\r\n\r\n"
            return out
        out += data[end + 2 : end + 2 + size]
        assert data[end + 2 + size : end + 4 + size] == b"\r\n"
        pos = end + 4 + size


@pytest.mark.parametrize("one_write", [False, True])
def test_answers_are_framed_once(one_write):
    body = b"data: a\n\ndata: bb\n\ndata: [DONE]\n\n"
    a = lean_backend.answer("openai", Recording("application/json", b'{"x":1}'), Recording("text/event-stream", body),
                            one_write)  # fmt: skip
    head, _, rest = a.json.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 200 OK" and b"Content-Length: 7" in head and rest == b'{"x":1}'
    assert len(a.stream) == (1 if one_write else 3) and a.events == 3
    head, _, chunked = b"".join(a.stream).partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Type: text/event-stream" in head
    assert _dechunk(chunked) == body
    if not one_write:  # one chunk per event, each its own write
        assert a.stream[1] == b"a\r\ndata: bb\n\n\r\n"  # 10 bytes


@pytest.fixture
async def recordings():
    return await lean_backend.record(chunks=20)


@pytest.fixture
async def lean_url(recordings):
    routes = lean_backend.answers(recordings)
    server = await asyncio.get_running_loop().create_server(lambda: lean_backend.LeanProtocol(routes), "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


def _recorded_text(recordings, fmt: str) -> str:
    doc = json.loads(recordings[fmt][0].body)
    return {"openai": lambda: doc["choices"][0]["message"]["content"], "anthropic": lambda: doc["content"][0]["text"],
            "ollama": lambda: doc["message"]["content"]}[fmt]()  # fmt: skip


async def test_openai_sdk_json_and_stream(lean_url, recordings):
    text = _recorded_text(recordings, "openai")
    assert text.startswith("echo: Summarise")
    async with openai.AsyncOpenAI(base_url=lean_url + "/v1", api_key="k", max_retries=0, timeout=10) as c:
        r = await c.chat.completions.create(model="m", messages=USER)
        assert r.choices[0].message.content == text and r.choices[0].finish_reason == "stop"
        assert r.usage.completion_tokens > 0
        stream = await c.chat.completions.create(model="m", messages=USER, stream=True)
        chunks = [ch async for ch in stream]
    deltas = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert "".join(deltas) == text and len(deltas) == 20
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason == "stop"


async def test_anthropic_sdk_json_and_stream(lean_url, recordings):
    text = _recorded_text(recordings, "anthropic")
    async with anthropic.AsyncAnthropic(base_url=lean_url, api_key="k", max_retries=0, timeout=10) as c:
        m = await c.messages.create(model="m", max_tokens=64, messages=USER)
        assert m.content[0].text == text and m.stop_reason == "end_turn"
        async with c.messages.stream(model="m", max_tokens=64, messages=USER) as s:
            deltas = [ev.delta.text async for ev in s if ev.type == "content_block_delta"]
            final = await s.get_final_message()
    assert "".join(deltas) == text and len(deltas) == 20
    assert final.content[0].text == text and final.usage.output_tokens > 0


async def test_ollama_sdk_json_and_stream(lean_url, recordings):
    text = _recorded_text(recordings, "ollama")
    c = ollama.AsyncClient(host=lean_url, timeout=10)
    r = await c.chat(model="m", messages=USER, stream=False)
    assert r.message.content == text and r.done
    parts = [p async for p in await c.chat(model="m", messages=USER, stream=True)]
    assert "".join(p.message.content for p in parts if not p.done) == text and parts[-1].done
    assert len(parts) == 21  # 20 content lines and the closing one
    assert lean_backend.answers(recordings)[b"/api/chat"].stream_by_default  # Ollama's, without "stream"


async def test_keep_alive_pipelining_and_unknown_path(lean_url, recordings):
    host, port = lean_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    post = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
    body = b'{"model":"m"}'
    writer.write(post % (b"/v1/messages", len(body), body) + post % (b"/nope", len(body), body))  # two at once
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(first.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert await reader.readexactly(length) == recordings["anthropic"][0].body
    second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert second.startswith(b"HTTP/1.1 404")
    await reader.readexactly(int(second.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
    # the connection is still open: one more request, and `Connection: close` closes it after the answer
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
    rest = await asyncio.wait_for(reader.read(), 5)
    assert rest.startswith(b"HTTP/1.1 200 OK") and rest.endswith(recordings["openai"][0].body)
    writer.close()
