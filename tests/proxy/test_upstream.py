"""proxy/upstream.py: redirects are never followed (credentials would travel to the Location), the
debug log never names the backend's host, port or URL, and a response that is not valid HTTP is a
clean 502 in the caller's format -- with either client."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import aiohttp
import pytest
from aiohttp import web

from adapters import sse
from proxy.config import ConfigError, load_config_dict
from tests.conftest import proxy_url

BODY = {"model": "m", "messages": [{"role": "user", "content": "x"}]}


@pytest.mark.parametrize("http_client", ["raw", "aiohttp"])
async def test_redirect_is_not_followed_and_credentials_stay_home(aiohttp_server, start_proxy, http_client):
    reached: list[dict] = []

    async def elsewhere(request: web.Request) -> web.Response:
        reached.append(dict(request.headers))
        return web.json_response({"stolen": True})

    other = web.Application()
    other.router.add_route("*", "/{tail:.*}", elsewhere)
    thief = await aiohttp_server(other)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(str(thief.make_url("/collect")))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    up = await aiohttp_server(app)
    base = str(up.make_url(""))
    server = await start_proxy({
        "backends": {"az": {"provider": "azure", "base_url": base, "api_key": "azure-secret", "http_client": http_client},
                     "ant": {"provider": "anthropic", "base_url": base, "api_key": "ant-secret", "http_client": http_client},
                     "gem": {"provider": "gemini", "base_url": base, "api_key": "gem-secret", "http_client": http_client}},
        "models": [{"name": "az", "backend": "az"}, {"name": "ant", "backend": "ant"},
                   {"name": "gem", "backend": "gem"}],
    })
    async with aiohttp.ClientSession() as s:
        for model in ("az", "ant", "gem"):
            async with s.post(proxy_url(server, "/v1/chat/completions"), json={**BODY, "model": model}) as r:
                assert r.status == 502
                err = (await r.json())["error"]
                assert "redirect" in err["message"] and str(thief.port) not in err["message"]
    assert reached == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("http_client", ["raw", "aiohttp"])
async def test_debug_log_never_names_the_backend_host_or_port(start_proxy, caplog, http_client):
    port = _closed_port()
    server = await start_proxy({"server": {"log_level": "debug"},
                                "backends": {"b": {"provider": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
                                                   "http_client": http_client}},
                                "models": [{"name": "m", "backend": "b"}]})
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/v1/chat/completions"), json=BODY) as r:
            assert r.status == 502
    lines = [rec.getMessage() for rec in caplog.records if rec.name.startswith("llm_proxy")]
    assert any("connect failed" in line for line in lines)
    for line in lines:
        assert "127.0.0.1" not in line and str(port) not in line


MALFORMED = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
             b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
             b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
             b"not http at all\r\n\r\n"]


@pytest.mark.parametrize("answer", MALFORMED)
async def test_a_malformed_response_is_a_502_in_the_callers_format(start_proxy, answer):
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(v for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
                          if k.lower() == b"content-length"))
        await reader.readexactly(length)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(0.5)  # the gateway must not wait for more
        writer.close()

    up = await asyncio.start_server(serve, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{up.sockets[0].getsockname()[1]}"
    server = await start_proxy({"backends": {"b": {"provider": "openai", "base_url": base + "/v1"}},
                                "models": [{"name": "m", "backend": "b"}]})
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(proxy_url(server, "/v1/chat/completions"), json=BODY) as r:
                assert r.status == 502
                err = (await r.json())["error"]
                assert err["message"] == "backend 'b' sent a malformed response"
            async with s.post(proxy_url(server, "/v1/messages"), json={**BODY, "max_tokens": 5}) as r:
                assert r.status == 502
                body = await r.json()
                assert body["type"] == "error" and "malformed" in body["error"]["message"]
    finally:
        up.close()


def test_http_client_is_checked():
    backend = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1"}
    assert load_config_dict({"backends": {"b": backend}}).backends["b"].http_client == "raw"
    assert load_config_dict({"backends": {"b": {**backend, "http_client": "aiohttp"}}}).backends["b"].http_client == "aiohttp"
    with pytest.raises(ConfigError, match="backends.b.http_client"):
        load_config_dict({"backends": {"b": {**backend, "http_client": "curl"}}})
    with pytest.raises(ConfigError, match="backends.b.max_connections"):
        load_config_dict({"backends": {"b": {**backend, "max_connections": 0}}})


def completion(text: str) -> web.Response:
    return web.json_response({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                           "finish_reason": "stop"}]})


async def test_http_client_aiohttp_follows_the_environments_proxy(aiohttp_server, start_proxy, monkeypatch):
    """A backend only reachable through an HTTP proxy named by HTTP_PROXY: `http_client: aiohttp` goes
    through it; the raw client connects directly (and here cannot)."""
    seen: list[str] = []

    async def forward_proxy(request: web.Request) -> web.Response:
        seen.append(str(request.url))  # absolute-form target: the proxy is asked for the backend's URL
        return completion("via proxy")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward_proxy)
    fwd = await aiohttp_server(app)
    monkeypatch.setenv("HTTP_PROXY", str(fwd.make_url("")))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    backend = {"provider": "openai", "base_url": "http://backend.invalid/v1"}
    server = await start_proxy({"backends": {"env": {**backend, "http_client": "aiohttp"}, "direct": backend},
                                "models": [{"name": "env", "backend": "env"}, {"name": "direct", "backend": "direct"}]})
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/v1/chat/completions"), json={**BODY, "model": "env"}) as r:
            assert r.status == 200 and (await r.json())["choices"][0]["message"]["content"] == "via proxy"
        async with s.post(proxy_url(server, "/v1/chat/completions"), json={**BODY, "model": "direct"}) as r:
            assert r.status == 502
    assert seen == ["http://backend.invalid/v1/chat/completions"]


async def test_no_proxy_exempts_a_host(aiohttp_server, start_proxy, monkeypatch):
    async def direct(request: web.Request) -> web.Response:
        return completion("direct")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", direct)
    up = await aiohttp_server(app)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server = await start_proxy({"backends": {"b": {"provider": "openai", "base_url": str(up.make_url("/v1")),
                                                   "http_client": "aiohttp"}},
                                "models": [{"name": "m", "backend": "b"}]})
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/v1/chat/completions"), json=BODY) as r:
            assert r.status == 200 and (await r.json())["choices"][0]["message"]["content"] == "direct"


@pytest.mark.parametrize("http_client", ["raw", "aiohttp"])
@pytest.mark.parametrize("gap, phase", [(5.0, "idle after 0.3s"), (0.05, "total after 0.6s")])
async def test_stream_deadlines_end_the_stream_with_an_error_event(aiohttp_server, start_proxy, http_client,
                                                                   gap, phase):
    """A stream that goes silent (idle) or never ends (total): the client gets what came, then an
    error event naming the phase, and the upstream connection is closed."""
    gone = asyncio.Event()

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
                                 b'"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n')
                await asyncio.sleep(gap)
        except (ConnectionError, asyncio.CancelledError):
            gone.set()
            raise

    app = web.Application()
    app.router.add_post("/v1/chat/completions", trickle)
    up = await aiohttp_server(app)
    server = await start_proxy({"backends": {"b": {"provider": "openai", "base_url": str(up.make_url("/v1")),
                                                   "http_client": http_client,
                                                   "timeouts": {"idle": 0.3, "total": 0.6}}},
                                "models": [{"name": "m", "backend": "b"}]})
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/v1/chat/completions"), json={**BODY, "stream": True}) as r:
            assert r.status == 200
            text = await r.text()
    assert '"content":"x"' in text and phase in text and "timed out" in text
    await asyncio.wait_for(gone.wait(), 5)


@pytest.mark.parametrize("http_client", ["raw", "aiohttp"])
async def test_an_upstream_body_over_the_bound_is_a_502_in_the_callers_format(aiohttp_server, start_proxy, caplog,
                                                                              http_client):
    """server.max_upstream_body_bytes bounds what is read whole: an answer and an error body alike."""
    async def huge(request: web.Request) -> web.Response:
        model = (await request.json())["model"]
        if model == "error":
            return web.json_response({"error": {"message": "e" * 8192}}, status=500)
        return completion("x" * 8192)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", huge)
    up = await aiohttp_server(app)
    server = await start_proxy({"server": {"max_upstream_body_bytes": 4096},
                                "backends": {"b": {"provider": "openai", "base_url": str(up.make_url("/v1")),
                                                   "http_client": http_client}},
                                "models": [{"name": "answer", "backend": "b"}, {"name": "error", "backend": "b"}]})
    caplog.set_level(logging.DEBUG)
    expected = "backend 'b' sent a response body larger than the gateway accepts (4096 bytes)"
    async with aiohttp.ClientSession() as s:
        for model in ("answer", "error"):
            async with s.post(proxy_url(server, "/v1/chat/completions"), json={**BODY, "model": model}) as r:
                assert r.status == 502
                assert (await r.json())["error"]["message"] == expected
            async with s.post(proxy_url(server, "/v1/messages"), json={**BODY, "model": model, "max_tokens": 5}) as r:
                assert r.status == 502
                body = await r.json()
                assert body["type"] == "error" and body["error"]["message"] == expected
    lines = [rec.getMessage() for rec in caplog.records if rec.name.startswith("llm_proxy")]
    assert any("server.max_upstream_body_bytes (4096): connection closed" in line for line in lines)
    for line in lines:
        assert "127.0.0.1" not in line and str(up.port) not in line


def test_max_upstream_body_bytes_is_checked():
    assert load_config_dict({}).server.max_upstream_body_bytes == 64 * 1024 * 1024
    with pytest.raises(ConfigError, match="server.max_upstream_body_bytes"):
        load_config_dict({"server": {"max_upstream_body_bytes": 100}})


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])  # pass-through, translated
async def test_a_stream_line_without_end_is_refused_at_the_bound(aiohttp_server, start_proxy, monkeypatch, path):
    """An upstream that starts a line and never ends it: the client gets what came, then an error event,
    and the upstream connection is closed -- the gateway holds at most the bound."""
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 64 * 1024)
    gone, seen = asyncio.Event(), asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
                         b'"choices":[{"index":0,"delta":{"content":"first"},"finish_reason":null}]}\n\n')
        await seen.wait()  # the client has the first event: the endless line comes in later reads
        try:
            await resp.write(b"data: ")
            for _ in range(1024):  # 16 MiB at most: far past the bound, never a line end
                await resp.write(b"y" * 16384)
        except (ConnectionError, asyncio.CancelledError):
            gone.set()
            raise
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", endless)
    up = await aiohttp_server(app)
    server = await start_proxy({"backends": {"b": {"provider": "openai", "base_url": str(up.make_url("/v1"))}},
                                "models": [{"name": "m", "backend": "b"}]})
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, path), json={**BODY, "stream": True, "max_tokens": 5}) as r:
            assert r.status == 200
            first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
            while b"first" not in first:  # the Anthropic stream opens with message_start
                first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)
            seen.set()
            text = (await asyncio.wait_for(r.content.read(), 10)).decode()
    error = json.loads(text[text.rindex("data: ") + 6:])  # the last event, in the caller's format
    message = f"the backend's stream sent a line without a line end over {64 * 1024} bytes"
    if path == "/v1/messages":
        assert "event: error\n" in text and error["type"] == "error"
    assert error["error"]["message"] == message
    assert len(text) < 16384
    await asyncio.wait_for(gone.wait(), 5)
