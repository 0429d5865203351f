"""Same-format routes pass bytes through: only `model` is rewritten on the way in, unknown request and
response fields survive untouched, protocol headers are forwarded, client credentials never are."""

from __future__ import annotations

import json

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tests.conftest import proxy_url


class Capture:
    """A fake upstream that records what reached it and answers with a canned body."""

    def __init__(self, answer: dict, stream: list[bytes] | None = None, content_type: str = "text/event-stream") -> None:
        self.answer = answer
        self.stream = stream
        self.content_type = content_type
        self.requests: list[tuple[str, CIMultiDict[str], bytes]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.path, CIMultiDict(request.headers), body))
        if self.stream is None:
            return web.json_response(self.answer)
        resp = web.StreamResponse(headers={"Content-Type": self.content_type})
        await resp.prepare(request)
        for event in self.stream:
            await resp.write(event)
        return resp


OPENAI_ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "served-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "vendor_extra": [1, 2]},
                 "finish_reason": "stop", "stop_reason": 128009}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    "kv_transfer_params": {"opaque": True},
}


async def test_openai_request_bytes_only_model_rewritten(aiohttp_server, start_proxy):
    cap = Capture(OPENAI_ANSWER)
    up = await aiohttp_server(cap.app())
    server = await start_proxy({
        "backends": {"vllm": {"provider": "openai", "base_url": str(up.make_url("/v1")), "api_key": "backend-key"}},
        "models": [{"name": "llama", "backend": "vllm", "model": "meta-llama/Llama-3.1-8B-Instruct"}],
    })
    sent = {
        "model": "llama",
        "messages": [{"role": "user", "content": "caf\u00e9 \u2028 \U0001f999"}],
        "guided_json": {"type": "object"},
        "top_k": 7,
        "repetition_penalty": 1.05,
        "chat_template_kwargs": {"enable_thinking": False},
        "temperature": 0.25,
    }
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/v1/chat/completions"), json=sent,
                          headers={"Authorization": "Bearer client-key", "x-custom": "1"}) as r:
            assert r.status == 200
            got = await r.json()
    assert got == OPENAI_ANSWER  # unknown response fields reach the client untouched
    path, headers, body = cap.requests[0]
    assert path == "/v1/chat/completions"
    assert json.loads(body) == {**sent, "model": "meta-llama/Llama-3.1-8B-Instruct"}
    assert headers["Authorization"] == "Bearer backend-key"  # never the client's credential
    assert "x-custom" not in headers and "client-key" not in str(list(headers.values()))


async def test_openai_body_untouched_when_model_is_unchanged(aiohttp_server, start_proxy):
    cap = Capture(OPENAI_ANSWER)
    up = await aiohttp_server(cap.app())
    server = await start_proxy({
        "backends": {"b": {"provider": "openai", "base_url": str(up.make_url("/v1"))}},
        "models": [{"name": "same", "backend": "b"}],
    })
    raw = b'{"model": "same",  "messages": [{"role":"user","content":"x"}], "n": 2}'
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/v1/chat/completions"), data=raw,
                          headers={"Content-Type": "application/json"}) as r:
            assert r.status == 200
    assert cap.requests[0][2] == raw  # the exact bytes, whitespace included


async def test_anthropic_headers_and_unknown_fields_forwarded(aiohttp_server, start_proxy):
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
              "content": [{"type": "text", "text": "hi", "citations": None}], "stop_reason": "end_turn",
              "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 1}, "container": {"id": "c1"}}
    cap = Capture(answer)
    up = await aiohttp_server(cap.app())
    server = await start_proxy({
        "backends": {"claude": {"provider": "anthropic", "base_url": str(up.make_url("")).rstrip("/"),
                                "api_key": "sk-ant-backend"}},
        "models": [{"name": "claude", "backend": "claude", "model": "claude-sonnet-4-5"}],
    })
    sent = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
            "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
            "context_management": {"edits": []}}
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/v1/messages"), json=sent, headers={
            "x-api-key": "client-key", "anthropic-version": "2023-06-01",
            "anthropic-beta": "context-management-2025-06-27"}) as r:
            assert r.status == 200
            assert await r.json() == answer
    path, headers, body = cap.requests[0]
    assert path == "/v1/messages"
    assert json.loads(body) == {**sent, "model": "claude-sonnet-4-5"}
    assert headers["anthropic-beta"] == "context-management-2025-06-27"
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["x-api-key"] == "sk-ant-backend"


async def test_openai_stream_relayed_event_by_event(aiohttp_server, start_proxy):
    chunks = [
        b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}],"x_vendor":1}\n\n',
        b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n\r\n',
        b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}\n\n',
        b"data: [DONE]\n\n",
    ]
    cap = Capture({}, stream=chunks)
    up = await aiohttp_server(cap.app())
    server = await start_proxy({
        "backends": {"b": {"provider": "openai", "base_url": str(up.make_url("/v1"))}},
        "models": [{"name": "m", "backend": "b"}],
    })
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/v1/chat/completions"),
                          json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}) as r:
            text = (await r.read()).decode()
    events = [e for e in text.split("\n\n") if e]
    # The usage-only chunk was requested by the gateway (for metrics), not by the client: hidden.
    assert events == [
        'data: {"id":"c","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}],"x_vendor":1}',
        'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
        "data: [DONE]",
    ]
    assert json.loads(cap.requests[0][2])["stream_options"] == {"include_usage": True}


async def test_backend_url_and_key_scrubbed_from_upstream_error_text(aiohttp_server, start_proxy):
    """Some servers echo their own address or the key they were sent in error messages."""
    key = "sk-live-backend-secret"

    async def leaky(request: web.Request) -> web.Response:
        if (await request.json()).get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n')
            msg = f"worker at {request.url} lost key {key}"
            await resp.write(b"data: " + json.dumps({"error": {"message": msg, "type": "server_error"}}).encode() + b"\n\n")
            return resp
        msg = f"Incorrect API key provided: {key}. Sent to {request.host}, {request.url}"
        return web.json_response({"error": {"message": msg, "type": "invalid_request_error"}}, status=401)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", leaky)
    up = await aiohttp_server(app)
    server = await start_proxy({"backends": {"b": {"provider": "openai", "base_url": str(up.make_url("/v1")), "api_key": key}},
                                "models": [{"name": "m", "backend": "b"}]})
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/v1/chat/completions"), json=body) as r:
            text = await r.text()
            assert r.status == 401
        async with s.post(proxy_url(server, "/v1/chat/completions"), json={**body, "stream": True}) as r:
            streamed = await r.text()
    for out in (text, streamed):
        assert key not in out and str(up.port) not in out and "127.0.0.1" not in out
    assert "<backend b>" in text and "<backend b>" in streamed


OLLAMA_LINES = [
    b'{"model":"llama3.1:8b","created_at":"2026-01-01T00:00:00.000001Z","message":{"role":"assistant",'
    b'"content":"Hel"},"done":false,"vendor_extra":1}\n',
    b'{"model":"llama3.1:8b","created_at":"2026-01-01T00:00:00.000002Z","message":{"role":"assistant","content":"lo"},',
    b'"done":false}\n{"model":"llama3.1:8b","created_at":"2026-01-01T00:00:00.000003Z","message":{"role":"assistant",'
    b'"content":""},"done":true,"done_reason":"stop","total_duration":5,"prompt_eval_count":7,"eval_count":2}\n',
]


async def test_ollama_ndjson_stream_relayed_byte_for_byte(aiohttp_server, start_proxy):
    """Ollama client on an Ollama backend: the request reaches it with only `model` rewritten and the
    NDJSON lines reach the client exactly as sent (unknown fields, timestamps, durations included)."""
    cap = Capture({}, stream=OLLAMA_LINES, content_type="application/x-ndjson")
    up = await aiohttp_server(cap.app())
    server = await start_proxy({
        "backends": {"ol": {"provider": "ollama", "base_url": str(up.make_url(""))}},
        "models": [{"name": "llama", "backend": "ol", "model": "llama3.1:8b"}],
    })
    sent = {"model": "llama", "messages": [{"role": "user", "content": "hi"}], "options": {"num_ctx": 4096},
            "keep_alive": "5m", "format": "json"}  # no "stream": Ollama streams by default
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/api/chat"), json=sent) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/x-ndjson"
            assert r.headers["x-llm-proxy-deployment"]
            got = await r.read()
    assert got == b"".join(OLLAMA_LINES)
    path, _, body = cap.requests[0]
    assert path == "/api/chat" and json.loads(body) == {**sent, "model": "llama3.1:8b"}


async def test_ollama_truncated_ndjson_stream_ends_with_an_error_line(aiohttp_server, start_proxy):
    cap = Capture({}, stream=OLLAMA_LINES[:1], content_type="application/x-ndjson")
    up = await aiohttp_server(cap.app())
    server = await start_proxy({
        "backends": {"ol": {"provider": "ollama", "base_url": str(up.make_url(""))}},
        "models": [{"name": "llama", "backend": "ol", "model": "llama3.1:8b"}],
    })
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/api/chat"), json={"model": "llama", "messages": []}) as r:
            got = await r.read()
    first, last = got.rstrip(b"\n").split(b"\n")
    assert first + b"\n" == OLLAMA_LINES[0]
    assert "ended the stream early" in json.loads(last)["error"]


async def test_ollama_embed_passes_through_as_one_answer(aiohttp_server, start_proxy):
    answer = {"model": "nomic-embed-text", "embeddings": [[0.5, -0.25]], "prompt_eval_count": 3, "vendor": "x"}
    cap = Capture(answer)
    up = await aiohttp_server(cap.app())
    server = await start_proxy({
        "backends": {"ol": {"provider": "ollama", "base_url": str(up.make_url(""))}},
        "models": [{"name": "emb", "backend": "ol", "model": "nomic-embed-text"}],
    })
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/api/embed"), json={"model": "emb", "input": "hi"}) as r:
            assert r.status == 200
            assert await r.json() == answer
    assert cap.requests[0][0] == "/api/embed"

