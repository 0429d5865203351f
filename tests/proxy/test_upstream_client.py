"""The upstream client interface, held by both clients (raw and aiohttp) the same way: status,
case-insensitive headers, chunks as they come, read-all, redirects returned (not followed), release
returning or closing the connection, and failures in the closed set of errors."""

from __future__ import annotations

import asyncio
import gzip

import pytest
from aiohttp import web

from proxy.rawpool import RawClient
from proxy.upstream_client import AiohttpClient, BodyTooLarge, ConnectFailed, ConnectionBroken
from tests.proxy.test_upstream import _closed_port


@pytest.fixture(params=["raw", "aiohttp"])
async def make_client(request):
    made = []

    def make(max_connections: int = 4):
        cls = RawClient if request.param == "raw" else AiohttpClient
        made.append(cls(max_connections, 2.0))
        return made[-1]

    yield make
    for c in made:
        await c.close()


def deadline(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"X-Mixed-Case": "yes"})
    await resp.prepare(request)
    for i in range(3):
        await resp.write(b"part%d;" % i)
        await asyncio.sleep(0.02)
    return resp


async def json_body(request: web.Request) -> web.Response:
    return web.json_response({"echo": (await request.read()).decode()})


async def gzipped(request: web.Request) -> web.Response:
    return web.Response(body=gzip.compress(b"z" * 1000), headers={"Content-Encoding": "gzip"})


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/json")


async def reset(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    await resp.write(b"partial")
    request.transport.abort()
    return resp


BIG = 64 * 1024  # bodies over the 4 KiB limit the bound tests read with
PEERS = web.AppKey("peers", list)  # the client port of each request, in order
BOMB = gzip.compress(b"\0" * (16 << 20), 1)


async def announced(request: web.Request) -> web.Response:
    return web.Response(body=b"a" * BIG)  # Content-Length: 65536


async def chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()  # no Content-Length: only counting the bytes finds it too large
    await resp.prepare(request)
    for _ in range(BIG // 1024):
        await resp.write(b"c" * 1024)
    return resp


async def inflating(request: web.Request) -> web.Response:
    # 16 KiB sent, 16 MiB decoded: both clients inflate only as the reader reads, so the refusal comes
    # before the end of the body (which would have handed aiohttp's connection back to its pool).
    return web.Response(body=BOMB, headers={"Content-Encoding": "gzip"})


async def exact(request: web.Request) -> web.Response:
    return web.Response(body=b"e" * 4096)


@web.middleware
async def note_peer(request: web.Request, handler):
    request.app[PEERS].append(request.transport.get_extra_info("peername")[1])
    return await handler(request)


@pytest.fixture
async def server(aiohttp_server):
    app = web.Application(middlewares=[note_peer])
    app[PEERS] = []
    for path, handler in {"/stream": stream, "/json": json_body, "/gzip": gzipped, "/redirect": redirect,
                          "/reset": reset, "/announced": announced, "/chunked": chunked,
                          "/inflating": inflating, "/exact": exact}.items():
        app.router.add_route("*", path, handler)
    return await aiohttp_server(app)


@pytest.fixture
def base(server):
    return str(server.make_url(""))


async def test_chunks_arrive_as_they_come(make_client, base):
    c = make_client()
    resp = await c.request("GET", base + "/stream", {}, None, deadline())
    assert resp.status == 200 and resp.headers["x-mixed-case"] == resp.headers.get("X-MIXED-CASE") == "yes"
    chunks = []
    while chunk := await resp.chunk(deadline()):
        chunks.append(chunk)
    resp.release()
    assert b"".join(chunks) == b"part0;part1;part2;" and len(chunks) >= 2
    assert c.in_use() == 0


async def test_read_all_and_keep_alive(make_client, base):
    c = make_client()
    for i in range(3):
        resp = await c.request("POST", base + "/json", {"Content-Type": "application/json"}, b"%d" % i, deadline())
        assert (resp.status, await resp.read(deadline(), 1 << 20)) == (200, b'{"echo": "%d"}' % i)
        resp.release()
    assert c.in_use() == 0


async def test_gzip_is_decoded(make_client, base):
    c = make_client()
    resp = await c.request("GET", base + "/gzip", {}, None, deadline())
    assert await resp.read(deadline(), 1 << 20) == b"z" * 1000
    resp.release()


@pytest.mark.parametrize("path", ["/announced", "/chunked", "/inflating"])
async def test_read_all_over_the_limit_is_refused_and_the_connection_closed(make_client, server, base, path):
    c = make_client(1)
    resp = await c.request("GET", base + "/json", {}, None, deadline())  # opens the one connection
    await resp.read(deadline(), 4096)
    resp.release()
    resp = await c.request("GET", base + path, {}, None, deadline())  # reuses it
    with pytest.raises(BodyTooLarge) as info:
        await resp.read(deadline(), 4096)
    resp.release()
    assert info.value.detail == "response body over 4096 bytes" and c.in_use() == 0
    resp = await c.request("GET", base + "/exact", {}, None, deadline())  # a body of exactly the limit is fine
    assert await resp.read(deadline(), 4096) == b"e" * 4096
    resp.release()
    peers = server.app[PEERS]
    assert peers[0] == peers[1] != peers[2]  # the refused body's connection was not pooled


async def test_redirects_are_returned_not_followed(make_client, base):
    c = make_client()
    resp = await c.request("GET", base + "/redirect", {}, None, deadline())
    assert resp.status == 302 and resp.headers["location"] == "/json"
    resp.release()
    assert c.in_use() == 0


async def test_idle_deadline(make_client, base):
    c = make_client()
    resp = await c.request("GET", base + "/stream", {}, None, deadline())
    assert await resp.chunk(deadline())
    with pytest.raises(TimeoutError):
        await resp.chunk(deadline(0.001))
    resp.release()  # mid-body: closed
    assert c.in_use() == 0


async def test_reset_mid_body_is_a_broken_connection(make_client, base):
    c = make_client()
    resp = await c.request("GET", base + "/reset", {}, None, deadline())
    with pytest.raises(ConnectionBroken):
        while await resp.chunk(deadline()):
            pass
    resp.release()
    assert c.in_use() == 0


async def test_connect_refused(make_client):
    with pytest.raises(ConnectFailed) as info:
        await make_client().request("GET", f"http://127.0.0.1:{_closed_port()}/", {}, None, deadline())
    assert "127.0.0.1" not in info.value.detail
