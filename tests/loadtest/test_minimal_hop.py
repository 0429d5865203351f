"""The minimal hop of `--compare-hop minimal`: forwards the request bytes to the route's upstream with
its start-up headers, returns a sized answer whole and relays an unsized one chunk by chunk as it comes."""

from __future__ import annotations

import asyncio

from aiohttp import web

from loadtest.bench import minimal_hop


async def _upstream(aiohttp_server, release: asyncio.Event):
    seen: list[tuple[str, bytes, dict]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append((request.path, await request.read(), dict(request.headers)))
        return web.json_response({"ok": True}, status=201)

    async def stream(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, await request.read(), dict(request.headers)))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await asyncio.wait_for(release.wait(), 5)  # the second chunk only after the client saw the first
        await resp.write(b"data: second\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/echo", echo)
    app.router.add_post("/v1/stream", stream)
    return await aiohttp_server(app), seen


async def test_forwards_bytes_and_returns_the_sized_answer(aiohttp_server, aiohttp_client):
    upstream, seen = await _upstream(aiohttp_server, asyncio.Event())
    client = await aiohttp_client(minimal_hop.create_app({"up": str(upstream.make_url("/v1"))}))
    r = await client.post("/up/echo", data=b'{"model": "m"}', headers={"Content-Type": "application/json"})
    assert r.status == 201
    assert await r.json() == {"ok": True}
    assert r.headers["Content-Type"].startswith("application/json")
    path, body, headers = seen[0]
    assert (path, body) == ("/v1/echo", b'{"model": "m"}')
    assert headers["x-api-key"] == "bench" and headers["Authorization"] == "Bearer bench"


async def test_relays_a_stream_chunk_by_chunk(aiohttp_server, aiohttp_client):
    release = asyncio.Event()
    upstream, _ = await _upstream(aiohttp_server, release)
    client = await aiohttp_client(minimal_hop.create_app({"up": str(upstream.make_url("/v1"))}))
    r = await client.post("/up/stream", data=b"{}")
    assert r.headers["Content-Type"] == "text/event-stream"
    first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 5)  # arrives while upstream still waits
    assert first == b"data: first\n\n"
    release.set()
    assert await r.read() == b"data: second\n\n"


async def test_unknown_route_is_404(aiohttp_client):
    client = await aiohttp_client(minimal_hop.create_app({"up": "http://127.0.0.1:9"}))
    assert (await client.post("/other/x", data=b"{}")).status == 404
    assert (await client.get("/health")).status == 200
