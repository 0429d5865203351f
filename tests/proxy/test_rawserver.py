"""proxy/rawserver.py on real sockets (127.0.0.1): the fast routes served by the raw server, and every
other request handed to an aiohttp app behind it (which tags its answers `X-Served-By: aiohttp`).
Clients: raw asyncio streams (exact bytes, splits, pipelining) and aiohttp's ClientSession."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from contextlib import suppress

import aiohttp
import pytest
import uvloop
from aiohttp import web

from proxy.rawconn import HEAD_LIMIT
from proxy.rawroutes import Routes
from proxy.rawserver import RawServer
from proxy.serverio import Answer, BodyMalformed, BodyTooLarge, Inbound, json_answer

MAX_BODY = 1000


async def echo(request: Inbound) -> Answer:
    """What the handler saw, as JSON (surrogates escaped by json)."""
    try:
        body = await request.read()
    except BodyTooLarge:
        return json_answer(b'{"error":"too large"}', status=413)
    except BodyMalformed:
        return json_answer(b'{"error":"malformed"}', status=400)
    seen = {
        "method": request.method, "path": request.path, "query": dict(request.query),
        "match": dict(request.match_info), "headers": dict(request.headers), "length": request.content_length,
        "body": body.decode("utf-8", "replace"), "key": request.headers.get("X-API-KEY"),
        "has_key": "x-Api-Key" in request.headers, "dup": request.headers.get("x-dup"),
    }
    return json_answer(json.dumps(seen).encode(), {"X-Served-By": "raw"})


def aiohttp_app() -> web.Application:
    async def tagged(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"path": request.path, "match": dict(request.match_info), "body": body.decode()},
                                 headers={"X-Served-By": "aiohttp"})

    app = web.Application()
    app.router.add_get("/metrics", tagged)
    app.router.add_post("/other", tagged)
    app.router.add_post("/v1/chat/completions", tagged)  # as in the gateway: aiohttp has the API routes too
    app.router.add_post("/v1beta/models/{target}", tagged)
    return app


class Served:
    def __init__(self, server: RawServer, runner: web.AppRunner) -> None:
        self.server = server
        self.runner = runner
        self.port = server.port
        self.url = f"http://127.0.0.1:{server.port}"

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer


@pytest.fixture
async def serve():
    started: list[Served] = []

    async def _serve(extra=(), *, max_body: int = MAX_BODY, keepalive_timeout: float = 5.0) -> Served:
        runner = web.AppRunner(aiohttp_app(), handler_cancellation=True, access_log=None)
        await runner.setup()
        routes = [("POST", "/v1/chat/completions", echo), ("POST", "/v1beta/models/{target}", echo),
                  ("GET", "/v1/models/{target}", echo), *extra]
        server = RawServer(routes, runner.server, max_body=max_body, keepalive_timeout=keepalive_timeout)
        await server.start("127.0.0.1", 0)
        started.append(Served(server, runner))
        return started[-1]

    yield _serve
    for served in started:
        await served.server.shutdown(1.0)
        await served.runner.cleanup()


def post(path: str, body: bytes = b"", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One answer: status, headers (lower-case names), body (Content-Length or chunked)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            chunk = await reader.readexactly(size + 2)
            if not size:
                break
            body += chunk[:-2]
    else:
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 5)
    return status, headers, body


async def closed(reader: asyncio.StreamReader, within: float = 3.0) -> bool:
    with suppress(ConnectionError):
        return await asyncio.wait_for(reader.read(1), within) == b""
    return True


# -- routing, request fields --------------------------------------------------------------------------

async def test_routes_match_info_query_and_headers_through_aiohttp_client(serve):
    served = await serve()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{served.url}/v1/chat/completions?a=1&a=2&b=&c=%20x", data=b"hi") as resp:
            seen = await resp.json()
            assert resp.headers["X-Served-By"] == "raw" and "Date" in resp.headers
        assert seen["method"] == "POST" and seen["path"] == "/v1/chat/completions"
        assert seen["query"] == {"a": "1", "b": "", "c": " x"} and seen["match"] == {}
        assert seen["body"] == "hi" and seen["length"] == 2
        async with session.post(f"{served.url}/v1beta/models/gemini-2.0:generateContent?key=k", data=b"{}") as resp:
            seen = await resp.json()
        assert seen["match"] == {"target": "gemini-2.0:generateContent"} and seen["query"] == {"key": "k"}
        async with session.get(f"{served.url}/v1/models/llama-3") as resp:
            seen = await resp.json()
        assert (seen["method"], seen["match"], seen["body"], seen["length"]) == ("GET", {"target": "llama-3"}, "", None)


async def test_header_names_case_insensitive_first_value_kept_and_non_utf8_bytes(serve):
    served = await serve()
    reader, writer = await served.connect()
    writer.write(post("/v1/chat/completions", b"x", b"X-Api-Key: k\xff\xfe\r\nX-Dup: 1\r\nx-dup: 2\r\n"))
    status, _, body = await read_answer(reader)
    seen = json.loads(body)
    assert status == 200 and seen["has_key"] and seen["dup"] == "1"
    assert seen["key"] == b"k\xff\xfe".decode("utf-8", "surrogateescape")  # as aiohttp decodes it
    assert "x-api-key" in seen["headers"] and "X-Api-Key" not in seen["headers"]
    writer.close()


async def test_the_header_name_cache_stays_bounded_whatever_names_clients_send(serve):
    from proxy.rawconn import _NAMES

    served = await serve()
    reader, writer = await served.connect()
    for batch in range(8):  # 600 short names (past the count bound) and 48 long ones (past the size bound)
        long = batch % 2 == 0
        names = b"".join(b"X-%s-%04d: v\r\n" % (b"n" * (900 if long else 1), i + 200 * batch)
                         for i in range(12 if long else 150))
        writer.write(post("/v1/chat/completions", b"", names))
        assert (await read_answer(reader))[0] == 200
    assert len(_NAMES) <= 512 and max(map(len, _NAMES)) <= 64
    writer.close()


def test_routes_refuse_templates_other_than_one_last_segment():
    for template in ("/a/{x}/b", "/a/{x}{y}", "/a{x}", "/a/{}"):
        with pytest.raises(ValueError):
            Routes([("GET", template, echo)])


# -- keep-alive, framing, splits ------------------------------------------------------------------------

async def test_keep_alive_serves_many_requests_on_one_connection(serve):
    served = await serve()
    reader, writer = await served.connect()
    for i in range(25):
        writer.write(post("/v1/chat/completions", b"n%d" % i))
        status, headers, body = await read_answer(reader)
        assert status == 200 and json.loads(body)["body"] == f"n{i}" and "connection" not in headers
    assert len(served.server.conns) == 1
    writer.close()


async def test_connection_close_is_honoured(serve):
    served = await serve()
    reader, writer = await served.connect()
    writer.write(post("/v1/chat/completions", b"x", b"Connection: close\r\n"))
    status, headers, _ = await read_answer(reader)
    assert status == 200 and headers["connection"] == "close"
    assert await closed(reader)


async def test_request_fed_byte_by_byte_and_split_at_every_position(serve):
    served = await serve()
    request = post("/v1beta/models/m1?q=1", b'{"a":1}', b"X-K: v\r\n")
    reader, writer = await served.connect()
    for byte in range(len(request)):
        writer.write(request[byte:byte + 1])
        await writer.drain()
        await asyncio.sleep(0)
    status, _, body = await read_answer(reader)
    assert status == 200
    whole = json.loads(body)
    assert whole["match"] == {"target": "m1"} and whole["body"] == '{"a":1}' and whole["headers"]["x-k"] == "v"
    for split in range(1, len(request)):
        writer.write(request[:split])
        await writer.drain()
        await asyncio.sleep(0.0005)
        writer.write(request[split:])
        status, _, body = await read_answer(reader)
        assert (status, json.loads(body)) == (200, whole), split
    writer.close()


async def test_chunked_request_body_is_dechunked(serve):
    served = await serve()
    reader, writer = await served.connect()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    writer.write(head + b"3\r\nabc\r\n")
    await writer.drain()
    await asyncio.sleep(0.01)
    writer.write(b"4;ext=1\r\ndefg\r\n0\r\n\r\n")
    status, _, body = await read_answer(reader)
    seen = json.loads(body)
    assert status == 200 and seen["body"] == "abcdefg" and seen["length"] is None
    writer.write(post("/v1/chat/completions", b"after"))  # the connection is still good
    assert json.loads((await read_answer(reader))[2])["body"] == "after"
    writer.close()


CHUNKED_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("writes, status, error", [
    # announced over the bound: refused before a byte of the body is sent
    ([b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)],
     413, "too large"),
    ([CHUNKED_HEAD] + [b"190\r\n" + b"x" * 400 + b"\r\n"] * 3, 413, "too large"),  # counted as it comes
    ([CHUNKED_HEAD + b"zz\r\nabc\r\n"], 400, "malformed"),  # broken chunked framing
], ids=["announced-too-large", "counted-too-large", "malformed-chunked"])
async def test_body_refused_is_answered_then_the_connection_closed(serve, writes, status, error):
    served = await serve()
    reader, writer = await served.connect()
    for data in writes:
        writer.write(data)
        await writer.drain()
        await asyncio.sleep(0.005)
    got, headers, body = await read_answer(reader)
    assert (got, json.loads(body), headers["connection"]) == (status, {"error": error}, "close")
    assert await closed(reader)


async def test_expect_100_continue(serve):
    served = await serve()
    reader, writer = await served.connect()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    status, _, body = await read_answer(reader)
    assert status == 200 and json.loads(body)["body"] == "hello"
    # announced over the bound: no 100 Continue, the refusal straight away
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
    status, _, _ = await read_answer(reader)
    assert status == 413
    writer.close()


async def test_large_answer_body_and_many_pipelined_requests_past_the_read_ahead_bound(serve):
    big = bytes(range(256)) * 1024  # 256 KiB: written after its head, not copied

    async def large(request: Inbound):
        return Answer(200, big + await request.read(), {"Content-Type": "application/octet-stream"})

    served = await serve([("POST", "/large", large)])
    reader, writer = await served.connect()
    count = 150  # 150 x ~900 bytes pipelined: over AHEAD_LIMIT, reading pauses and resumes
    writer.write(b"".join(post("/large", b"%04d" % i + b"p" * 850) for i in range(count)))
    for i in range(count):
        status, _, body = await read_answer(reader)
        assert status == 200 and body[:len(big)] == big and body[len(big):len(big) + 4] == b"%04d" % i
    writer.write(post("/v1/chat/completions", b"after"))
    assert json.loads((await read_answer(reader))[2])["body"] == "after"
    writer.close()


# -- pipelining and handover ------------------------------------------------------------------------------

async def test_pipelined_fast_requests_are_answered_in_order(serve):
    served = await serve()
    reader, writer = await served.connect()
    writer.write(b"".join(post("/v1/chat/completions", b"r%d" % i) for i in range(5)))
    bodies = [json.loads((await read_answer(reader))[2])["body"] for _ in range(5)]
    assert bodies == [f"r{i}" for i in range(5)]
    writer.close()


async def test_pipelined_fast_then_non_fast_closes_after_the_fast_answer(serve):
    served = await serve()
    reader, writer = await served.connect()
    writer.write(post("/v1/chat/completions", b"first") + b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = await read_answer(reader)
    assert status == 200 and json.loads(body)["body"] == "first" and headers["connection"] == "close"
    assert await closed(reader)
    reader, writer = await served.connect()  # the client's retry, first on its connection: aiohttp's
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, _ = await read_answer(reader)
    assert status == 200 and headers["x-served-by"] == "aiohttp"
    writer.close()


@pytest.mark.parametrize("request_bytes, status, aiohttp_saw", [
    (b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", 200, "/metrics"),
    (post("/other", b"o"), 200, "/other"),
    (b"GET /v1/chat/completions HTTP/1.1\r\nHost: t\r\n\r\n", 405, None),
    (post("/v1beta/models/gem%3Agen", b"p"), 200, "gem:gen"),
    (post("/v1beta/models/a%2Fb", b"p"), 200, "a/b"),
    (b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi", 200, "/v1/chat/completions"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nUpgrade: websocket\r\n"
     + b"Connection: upgrade\r\n\r\n", 200, "/v1/chat/completions"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nExpect: other\r\n\r\n", 417, None),
    (b"\x00\x01garbage\r\n\r\n", 400, None),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * (HEAD_LIMIT + 10) + b"\r\n\r\n", 431, None),
], ids=["metrics", "other", "api-path-with-get", "percent-encoded", "encoded-slash", "http-1.0", "upgrade",
        "expect-other", "garbage", "oversized-head"])
async def test_requests_not_for_the_fast_path_are_handed_to_aiohttp(serve, request_bytes, status, aiohttp_saw):
    served = await serve()
    reader, writer = await served.connect()
    writer.write(request_bytes)
    got, headers, body = await read_answer(reader)
    assert got in ((400, 431) if status == 431 else (status,))  # aiohttp answers a long header 400 or 431
    assert headers.get("x-served-by") != "raw" and "aiohttp" in headers.get("server", "")
    if aiohttp_saw:
        seen = json.loads(body)
        assert aiohttp_saw in (seen["path"], seen["match"].get("target"))
    assert not served.server.conns  # the connection is aiohttp's now
    writer.close()


async def test_keep_alive_connection_whose_next_request_is_not_fast_is_handed_over(serve):
    served = await serve()
    reader, writer = await served.connect()
    writer.write(post("/v1/chat/completions", b"one"))
    assert (await read_answer(reader))[1]["x-served-by"] == "raw"
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await read_answer(reader))[1]["x-served-by"] == "aiohttp"
    writer.write(post("/v1/chat/completions", b"three"))  # from now on the connection is aiohttp's
    status, headers, body = await read_answer(reader)
    assert (status, headers["x-served-by"], json.loads(body)["body"]) == (200, "aiohttp", "three")
    writer.close()


async def test_non_fast_request_arriving_while_one_is_served_is_handed_over_after_its_answer(serve):
    started = asyncio.Event()

    async def slow(request: Inbound):
        started.set()
        await asyncio.sleep(0.2)
        return json_answer(b'{"slow":true}')

    served = await serve([("POST", "/slow", slow)])
    reader, writer = await served.connect()
    for other in (b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", post("/other", b"o" * 300_000)):
        started.clear()
        writer.write(post("/slow"))
        await asyncio.wait_for(started.wait(), 5)
        writer.write(other)  # its own read: its first byte is known (the long one is kept with reads paused)
        status, headers, body = await read_answer(reader)
        assert (status, body, headers.get("connection")) == (200, b'{"slow":true}', None)
        status, headers, body = await read_answer(reader)
        assert (status, headers["x-served-by"]) == (200, "aiohttp")
        assert json.loads(body)["path"] == other.split(b" ")[1].decode()
        assert len(json.loads(body)["body"]) == len(other.partition(b"\r\n\r\n")[2])
        reader, writer = await served.connect()  # the next round on a connection of ours
    writer.close()


async def test_head_still_incomplete_past_the_limit_is_handed_over(serve):
    served = await serve()
    reader, writer = await served.connect()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n" + b"X-Many: %05d\r\n" % 1 * 1500)
    await writer.drain()
    await asyncio.sleep(0.05)
    assert not served.server.conns  # over HEAD_LIMIT and not complete: aiohttp's already
    writer.write(b"Content-Length: 0\r\n\r\n")
    status, headers, _ = await read_answer(reader)
    assert "aiohttp" in headers.get("server", "") and status in (200, 400, 431)
    writer.close()


# -- timers --------------------------------------------------------------------------------------------------

async def test_idle_keep_alive_connection_is_closed(serve):
    served = await serve(keepalive_timeout=0.3)
    reader, writer = await served.connect()
    writer.write(post("/v1/chat/completions", b"x"))
    assert (await read_answer(reader))[0] == 200
    assert await closed(reader, 2.0)
    reader, _ = await served.connect()  # never sends a byte
    assert await closed(reader, 2.0)


@pytest.mark.parametrize("close", [False, True])
async def test_client_not_reading_its_answer_is_dropped_after_the_keep_alive_timeout(serve, close):
    async def huge(request: Inbound):
        return Answer(200, b"h" * 8_000_000, {"Content-Type": "application/octet-stream"}, close=close)

    served = await serve([("POST", "/huge", huge)], keepalive_timeout=0.3)
    sock = socket.create_connection(("127.0.0.1", served.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(post("/huge"))
    await asyncio.sleep(0.1)
    assert served.server.conns  # the answer is stuck in the server's buffer
    for _ in range(40):
        await asyncio.sleep(0.05)
        if not served.server.conns:
            break
    assert not served.server.conns
    sock.close()


async def test_head_not_complete_in_time_is_closed_even_while_bytes_trickle(serve):
    served = await serve(keepalive_timeout=0.4)
    reader, writer = await served.connect()
    loop = asyncio.get_running_loop()
    start = loop.time()
    with suppress(ConnectionError):
        for byte in b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 40:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
            if reader.at_eof():
                break
    assert await closed(reader, 2.0)
    assert loop.time() - start < 1.9  # well before the 2 s the whole head would take


# -- streaming, flow control, cancellation ---------------------------------------------------------------

async def test_streamed_answer_is_chunked_and_read_as_it_is_written(serve):
    step = asyncio.Event()

    async def streamer(request: Inbound):
        out = await request.stream(200, {"Content-Type": "text/event-stream"})
        await out.write(b"data: one\n\n")
        await asyncio.wait_for(step.wait(), 5)
        await out.write(b"")  # nothing: must not end the answer
        await out.write(b"data: two\n\n")
        return out

    served = await serve([("POST", "/stream", streamer)])
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{served.url}/stream", data=b"{}") as resp:
            assert resp.headers["Transfer-Encoding"] == "chunked"
            assert await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5) == b"data: one\n\n"
            step.set()
            assert await resp.content.read() == b"data: two\n\n"
        async with session.post(f"{served.url}/v1/chat/completions", data=b"again") as resp:  # same connection
            assert (await resp.json())["body"] == "again"


async def test_stream_write_waits_for_a_slow_client_and_fails_once_it_is_gone(serve):
    seen: dict[str, object] = {}
    blocked = asyncio.Event()
    finished = asyncio.Event()

    async def flood(request: Inbound):
        out = await request.stream(200, {"Content-Type": "application/octet-stream"})
        pending = None
        try:
            for _ in range(2000):
                pending = asyncio.ensure_future(out.write(b"x" * 65536))
                done, _ = await asyncio.wait({pending}, timeout=0.3)
                if not done:
                    blocked.set()
                    await asyncio.sleep(30)
            return out
        except asyncio.CancelledError:
            seen["cancelled"] = True
            try:
                await asyncio.wait_for(pending, 2)
            except Exception as exc:  # noqa: BLE001  (what the waiting write raised)
                seen["pending"] = exc
            try:
                await out.write(b"late")
            except Exception as exc:  # noqa: BLE001
                seen["late"] = exc
            seen["transport"] = out.transport
            raise
        finally:
            finished.set()

    served = await serve([("POST", "/flood", flood)])
    sock = socket.create_connection(("127.0.0.1", served.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(post("/flood"))
    await asyncio.wait_for(blocked.wait(), 10)  # the client reads nothing: the writes stop
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # reset
    await asyncio.wait_for(finished.wait(), 5)
    assert seen["cancelled"] is True
    assert isinstance(seen["pending"], ConnectionError) and isinstance(seen["late"], ConnectionError)
    assert seen["transport"] is None


def waits_until_cancelled(started: asyncio.Event, cancelled: asyncio.Event):
    """A handler that reads the body, says so, and waits until cancelled (which it records)."""

    async def waits(request: Inbound):
        await request.read()
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return json_answer(b"{}")

    return waits


async def test_client_going_away_cancels_the_handler(serve):
    started, cancelled = asyncio.Event(), asyncio.Event()
    served = await serve([("POST", "/wait", waits_until_cancelled(started, cancelled))])
    _, writer = await served.connect()
    writer.write(post("/wait", b"x"))
    await asyncio.wait_for(started.wait(), 5)
    writer.close()
    await asyncio.wait_for(cancelled.wait(), 5)
    await asyncio.sleep(0.05)
    assert not served.server.conns and served.server.in_flight == 0


# -- errors ----------------------------------------------------------------------------------------------------

async def test_handler_exception_is_a_500_and_the_log_has_no_request_content(serve, caplog):
    async def boom(request: Inbound):
        raise RuntimeError("leak:" + (await request.read()).decode())

    served = await serve([("POST", "/boom", boom)])
    reader, writer = await served.connect()
    with caplog.at_level(logging.ERROR, logger="llm_proxy"):
        writer.write(post("/boom", b"secret-prompt-text"))
        status, _, body = await read_answer(reader)
    assert status == 500
    assert json.loads(body)["error"] == {"message": "internal error in the gateway", "type": "server_error",
                                         "param": None, "code": None}
    assert "RuntimeError" in caplog.text and "boom" in caplog.text  # the type and where
    assert "secret-prompt-text" not in caplog.text
    writer.write(post("/v1/chat/completions", b"next"))  # the connection goes on
    assert (await read_answer(reader))[0] == 200
    writer.close()


async def test_handler_failing_in_a_stream_is_a_500_until_a_chunk_went_out_then_a_cut(serve, caplog):
    async def fails(request: Inbound):
        out = await request.stream(200, {"Content-Type": "text/event-stream"})
        if request.query.get("after"):
            await out.write(b"data: one\n\n")
        raise KeyError("x")

    served = await serve([("POST", "/fails", fails)])
    reader, writer = await served.connect()
    with caplog.at_level(logging.ERROR, logger="llm_proxy"):
        writer.write(post("/fails"))
        status, headers, body = await read_answer(reader)  # the head was not sent yet: a clean 500
        assert status == 500 and json.loads(body)["error"]["type"] == "server_error"
        writer.write(post("/fails?after=1"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in head
        rest = await asyncio.wait_for(reader.read(), 5)  # one chunk, then the connection ends: no last chunk
    assert rest == b"b\r\ndata: one\n\n\r\n"
    assert caplog.text.count("unhandled KeyError") == 2
    writer.close()


@pytest.mark.parametrize("name, value", [("X-Bad", "a\r\nInjected: 1"), ("X-Bad", "a\nInjected: 1"),
                                         ("X-Bad\r\nInjected", "1"), ("X-Bad", "a\x00b"), ("X-Bad", "\udcff")])
async def test_answer_header_with_cr_lf_or_nul_is_never_written(serve, name, value, caplog):
    async def bad_answer(request: Inbound):
        return Answer(200, b"{}", {"Content-Type": "application/json", name: value})

    async def bad_stream(request: Inbound):
        return await request.stream(200, {name: value})

    served = await serve([("POST", "/bad", bad_answer), ("POST", "/badstream", bad_stream)])
    reader, writer = await served.connect()
    with caplog.at_level(logging.ERROR, logger="llm_proxy"):
        for path in ("/bad", "/badstream"):
            writer.write(post(path))
            status, headers, body = await read_answer(reader)
            assert status == 500 and "injected" not in headers and "x-bad" not in headers
            assert json.loads(body)["error"]["type"] == "server_error"
    assert "Injected" not in caplog.text
    writer.close()


# -- shutdown ----------------------------------------------------------------------------------------------------

async def test_shutdown_closes_idle_finishes_in_flight_and_cancels_the_late(serve):
    cancelled = asyncio.Event()
    started = {"quick": asyncio.Event(), "late": asyncio.Event()}

    async def quick(request: Inbound):
        started["quick"].set()
        await asyncio.sleep(0.3)
        return json_answer(b'{"done":true}')

    late = waits_until_cancelled(started["late"], cancelled)
    served = await serve([("POST", "/quick", quick), ("POST", "/late", late)])
    idle_reader, idle_writer = await served.connect()
    idle_writer.write(post("/v1/chat/completions", b"x"))
    await read_answer(idle_reader)
    quick_reader, quick_writer = await served.connect()
    quick_writer.write(post("/quick"))
    late_reader, late_writer = await served.connect()
    late_writer.write(post("/late"))
    await asyncio.wait_for(asyncio.gather(started["quick"].wait(), started["late"].wait()), 5)
    assert served.server.in_flight == 2
    shutdown = asyncio.ensure_future(served.server.shutdown(1.0))
    assert await closed(idle_reader, 0.5)
    status, headers, body = await read_answer(quick_reader)
    assert (status, headers["connection"], body) == (200, "close", b'{"done":true}')
    assert not shutdown.done()  # still waiting for the late one
    await asyncio.wait_for(shutdown, 3)
    assert cancelled.is_set() and await closed(late_reader, 1.0)
    with pytest.raises(OSError):
        await served.connect()  # no longer listening
    for writer in (idle_writer, quick_writer, late_writer):
        writer.close()


# -- on uvloop, as in production ------------------------------------------------------------------------------

def test_fast_path_stream_flow_control_and_handover_on_uvloop():
    big = b"z" * 300_000  # over the transport's high-water mark: writev, pause_writing / resume_writing

    async def scenario() -> list:
        async def streamer(request: Inbound):
            out = await request.stream(200, {"Content-Type": "text/plain"})
            await out.write(b"a")
            await out.write(big)
            return out

        async def large(request: Inbound):
            return Answer(200, big + await request.read(), {"Content-Type": "application/octet-stream"})

        runner = web.AppRunner(aiohttp_app(), handler_cancellation=True, access_log=None)
        await runner.setup()
        routes = [("POST", "/v1/chat/completions", echo), ("POST", "/stream", streamer), ("POST", "/large", large)]
        server = RawServer(routes, runner.server, max_body=MAX_BODY, keepalive_timeout=5)
        await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        got = []
        for request in (post("/v1/chat/completions", b"u"), post("/stream")):
            writer.write(request)
            got.append(await read_answer(reader))
        # pipelined past the read-ahead bound (reads pause, then resume), big answers written as they drain
        writer.write(b"".join(post("/large", b"%03d" % i + b"p" * 900) for i in range(100)))
        got.append([(await read_answer(reader))[2][len(big):len(big) + 3] for _ in range(100)])
        for request in (b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", post("/v1/chat/completions", b"v")):
            writer.write(request)
            got.append(await read_answer(reader))
        writer.close()
        await server.shutdown(1.0)
        await runner.cleanup()
        return got

    first, streamed, pipelined, metrics, after = uvloop.run(scenario())
    assert json.loads(first[2])["body"] == "u" and first[1]["x-served-by"] == "raw"
    assert streamed[1]["transfer-encoding"] == "chunked" and streamed[2] == b"a" + big
    assert pipelined == [b"%03d" % i for i in range(100)]
    assert metrics[1]["x-served-by"] == "aiohttp" and after[1]["x-served-by"] == "aiohttp"
