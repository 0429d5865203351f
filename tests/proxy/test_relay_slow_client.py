"""A client that stops reading a stream cannot hold the upstream connection past the exchange's
deadlines (proxy/relay.py `_write`): the write to the client is bounded by `timeouts.idle` and
`timeouts.total`, the client's connection is dropped and the upstream connection released, so slow
readers cannot starve a small pool."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
from aiohttp import web

from tests.conftest import proxy_url

CHUNK = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"' + b"x" * 4000 + b'"}}]}\n\n'


def firehose() -> web.Application:
    """An OpenAI-style backend that streams ~40 MB as fast as it can (more than any socket buffer
    between the gateway and a client), or answers a short non-streaming reply."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                      "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": "small"}}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(10_000):
            await resp.write(CHUNK)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def stalled_client(server, body: bytes) -> socket.socket:
    """Send a streaming request and never read the answer (a tiny receive window)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (server.host, server.port))
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    await loop.sock_sendall(sock, head + body)
    return sock


async def test_slow_readers_do_not_starve_the_pool(aiohttp_server, start_proxy):
    """Before: two clients that stopped reading held both connections of a `max_connections: 2` pool
    until `timeouts.total`; every other request to that backend got 504 meanwhile."""
    up = await aiohttp_server(firehose())
    server = await start_proxy({
        "backends": {"oa": {"provider": "openai", "base_url": str(up.make_url("/v1")), "max_connections": 2,
                            "timeouts": {"first_byte": 6, "idle": 1.0, "total": 30}}},
        "models": [{"name": "m", "backend": "oa"}],
    })
    body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    stalled = [await stalled_client(server, body) for _ in range(2)]
    try:
        await asyncio.sleep(1.0)  # both hold a pool connection now, their writes blocked
        t0 = time.monotonic()
        async with aiohttp.ClientSession() as s:
            async with s.post(proxy_url(server, "/v1/chat/completions"),
                              json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["choices"][0]["message"]["content"] == "small"
        assert time.monotonic() - t0 < 5  # freed after `idle`, not after `total`
        # The stalled clients' connections were dropped by the gateway.
        loop = asyncio.get_running_loop()
        for sock in stalled:
            got = b""
            try:
                while True:
                    chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5)
                    if not chunk:
                        break
                    got += chunk
            except ConnectionResetError:
                pass
            assert b"HTTP/1.1 200" in got[:100]
    finally:
        for sock in stalled:
            sock.close()
