"""proxy/rawhttp.py without sockets: a Connection fed response bytes whole, byte by byte and split at
every position must give the same status, headers, body and keep-alive verdict; bounds and malformed
answers end in the closed set of errors; a slow reader pauses the socket."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from proxy.rawhttp import HIGH_WATER, INFLATE_STEP, MAX_HEADER_BYTES, MAX_HEADERS, Connection
from proxy.upstream_client import BadResponse, BodyTooLarge, ConnectionBroken


class Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closing = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def writelines(self, parts) -> None:
        self.sent.extend(parts)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def abort(self) -> None:
        self.closing = True


class Pool:
    def __init__(self) -> None:
        self.released: list[bool] = []
        self.lost = 0

    def _release(self, conn, reuse: bool) -> None:
        self.released.append(reuse)

    def _lost(self, conn) -> None:
        self.lost += 1


def connection() -> tuple[Connection, Transport, Pool]:
    pool, transport = Pool(), Transport()
    conn = Connection(pool, ("http", "h", 80), asyncio.get_running_loop())  # type: ignore[arg-type]
    conn.connection_made(transport)
    return conn, transport, pool


def splits(raw: bytes) -> list[list[bytes]]:
    """Whole, byte by byte, and in two pieces at every position."""
    return [[raw], [raw[i:i + 1] for i in range(len(raw))], *([raw[:i], raw[i:]] for i in range(1, len(raw)))]


async def exchange(pieces: list[bytes], *, eof: Exception | None | bool = False, head_only: bool = False):
    """(status, headers, body, reused?) of the response fed as `pieces` (then EOF / a reset if asked)."""
    conn, _, pool = connection()
    resp = conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", None, head_only)
    for piece in pieces:
        conn.data_received(piece)
    if eof is not False:
        conn.connection_lost(eof)  # type: ignore[arg-type]
    deadline = asyncio.get_running_loop().time() + 1
    try:
        await resp.wait_headers(deadline)
        body = await resp.read(deadline, 1 << 20)
    finally:
        resp.release()
    return resp.status, dict(resp.headers), body, pool.released[-1]


CONTENT_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\nhello world"
CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Twice: a\r\nx-twice: b\r\n\r\n"
           b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
CLOSE_DELIMITED = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello world"
INFORMATIONAL = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
                 b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world")
GZIPPED = (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
           % len(gzip.compress(b"hello world")) + gzip.compress(b"hello world"))


@pytest.mark.parametrize("pieces", splits(CONTENT_LENGTH))
async def test_content_length(pieces):
    status, headers, body, reused = await exchange(pieces)
    assert (status, body, reused) == (200, b"hello world", True)
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("pieces", splits(CHUNKED))
async def test_chunked_with_extensions_and_trailers(pieces):
    status, headers, body, reused = await exchange(pieces)
    assert (status, body, reused) == (200, b"hello world", True)
    assert headers["x-twice"] == "a, b" and "x-trailer" not in headers


@pytest.mark.parametrize("pieces", splits(CLOSE_DELIMITED))
async def test_close_delimited_body_ends_with_the_connection(pieces):
    status, _, body, reused = await exchange(pieces, eof=None)
    assert (status, body, reused) == (200, b"hello world", False)


@pytest.mark.parametrize("pieces", splits(INFORMATIONAL))
async def test_1xx_answers_are_skipped(pieces):
    status, headers, body, reused = await exchange(pieces)
    assert (status, body, reused) == (200, b"hello world", True)
    assert "link" not in headers


@pytest.mark.parametrize("pieces", splits(GZIPPED))
async def test_gzip_body_is_decompressed(pieces):
    assert (await exchange(pieces))[2] == b"hello world"


@pytest.mark.parametrize("status", [204, 304])
async def test_bodiless_statuses(status):
    raw = b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n\r\n" % status
    assert await exchange([raw]) == (status, {"content-type": "application/json"}, b"", True)


async def test_head_has_no_body_and_the_connection_is_not_reused():
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    assert await exchange([raw], head_only=True) == (200, {"content-length": "5"}, b"", False)


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",  # unasked
])
async def test_connections_not_kept_alive(raw):
    assert (await exchange([raw]))[2:] == (b"ok", False)


async def test_headers_are_case_insensitive():
    conn, _, _ = connection()
    resp = conn.send(b"GET / HTTP/1.1\r\n\r\n", None, False)
    conn.data_received(CONTENT_LENGTH)
    assert resp.headers["Content-Type"] == resp.headers.get("CONTENT-TYPE") == "application/json"
    assert "content-TYPE" in resp.headers and resp.headers.get("x-missing") is None and len(resp.headers) == 2


@pytest.mark.parametrize("pieces, eof", [
    ([CONTENT_LENGTH[:-3]], None),  # Content-Length not reached
    ([CHUNKED[:-10]], None),  # no last chunk
    ([CLOSE_DELIMITED], ConnectionResetError()),  # a reset is not a clean end
    ([b"HTTP/1.1 200 OK\r\nContent-Le"], None),  # mid-headers
    ([], None),
])
async def test_truncated_responses_are_broken_connections(pieces, eof):
    with pytest.raises(ConnectionBroken):
        await exchange(pieces, eof=eof)


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
])
async def test_malformed_responses(raw):
    with pytest.raises(BadResponse):
        await exchange([raw], eof=None)


async def test_header_block_is_bounded_as_it_arrives():
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (2 * MAX_HEADER_BYTES)
    conn, transport, _ = connection()
    resp = conn.send(b"GET / HTTP/1.1\r\n\r\n", None, False)
    for i in range(0, len(big), 4096):
        conn.data_received(big[i:i + 4096])
        if transport.closing:
            break
    assert transport.closing and i <= MAX_HEADER_BYTES
    with pytest.raises(BadResponse, match="header block"):
        await resp.wait_headers(asyncio.get_running_loop().time() + 1)


async def test_header_block_is_bounded_when_it_arrives_in_one_read():
    raw = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(BadResponse, match="header block"):
        await exchange([raw])


async def test_trailers_are_bounded_too():
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
           b"X-Trailer: " + b"t" * MAX_HEADER_BYTES + b"\r\n\r\n")
    with pytest.raises(BadResponse, match="header block"):
        await exchange([raw])


async def test_header_count_is_bounded():
    raw = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n"
    with pytest.raises(BadResponse, match="headers"):
        await exchange([raw])


async def test_a_slow_reader_pauses_the_socket_and_gets_the_bytes_in_order():
    conn, transport, pool = connection()
    resp = conn.send(b"GET / HTTP/1.1\r\n\r\n", None, False)
    conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    deadline = asyncio.get_running_loop().time() + 1
    await resp.wait_headers(deadline)
    conn.data_received(b"3\r\none\r\n")
    assert await resp.chunk(deadline) == b"one"  # handed over as it came
    piece = b"x" * 16384
    sent = 0
    while not transport.paused:
        conn.data_received(b"4000\r\n" + piece + b"\r\n")
        sent += len(piece)
    assert HIGH_WATER < sent <= HIGH_WATER + len(piece)
    assert await resp.chunk(deadline) == b"x" * sent and not transport.paused
    conn.data_received(b"0\r\n\r\n")
    assert await resp.chunk(deadline) == b""
    resp.release()
    assert pool.released == [True]


async def test_waiting_has_a_deadline():
    conn, _, _ = connection()
    resp = conn.send(b"GET / HTTP/1.1\r\n\r\n", None, False)
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        await resp.wait_headers(loop.time() + 0.01)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    assert await resp.chunk(loop.time() + 0.01) == b"ab"
    with pytest.raises(TimeoutError):
        await resp.chunk(loop.time() + 0.01)


async def test_released_mid_body_the_connection_is_closed_not_reused():
    conn, _, pool = connection()
    resp = conn.send(b"GET / HTTP/1.1\r\n\r\n", None, False)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    resp.release()
    resp.release()  # idempotent
    assert pool.released == [False]


async def test_bytes_on_an_idle_connection_close_it():
    conn, transport, _ = connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    assert transport.closing


async def test_a_closed_transport_fails_the_send():
    conn, transport, _ = connection()
    transport.closing = True
    resp = conn.send(b"GET / HTTP/1.1\r\n\r\n", None, False)
    with pytest.raises(ConnectionBroken):
        await resp.wait_headers(asyncio.get_running_loop().time() + 1)
    assert not resp.any_bytes and transport.sent == []


BOMB = gzip.compress(b"\0" * (16 << 20), 1)  # 16 MiB in ~70 KiB
BOMB_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(BOMB), BOMB)


async def test_a_compressed_body_is_inflated_only_as_the_reader_drains():
    conn, transport, pool = connection()
    resp = conn.send(b"GET / HTTP/1.1\r\n\r\n", None, False)
    conn.data_received(BOMB_RESPONSE)  # all of it in one read, message end included
    assert resp._buffered <= HIGH_WATER + INFLATE_STEP and transport.paused
    deadline = asyncio.get_running_loop().time() + 5
    total = 0
    while chunk := await resp.chunk(deadline):
        assert len(chunk) <= HIGH_WATER + INFLATE_STEP and chunk.count(0) == len(chunk)
        total += len(chunk)
    assert total == 16 << 20 and not transport.paused
    resp.release()
    assert pool.released == [True]  # read to its end: reusable


@pytest.mark.parametrize("response", [
    BOMB_RESPONSE,  # small on the wire, over the limit once decoded
    b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000,  # announced, and all here
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + b"c" * 5000 + b"\r\n0\r\n\r\n",
], ids=["inflated", "content-length", "chunked"])
async def test_read_all_over_the_limit_closes_the_connection_even_when_the_body_is_complete(response):
    conn, transport, pool = connection()
    resp = conn.send(b"GET / HTTP/1.1\r\n\r\n", None, False)
    conn.data_received(response)
    deadline = asyncio.get_running_loop().time() + 1
    await resp.wait_headers(deadline)
    with pytest.raises(BodyTooLarge, match="over 4096 bytes"):
        await resp.read(deadline, 4096)
    resp.release()
    assert pool.released == [False] and transport.closing
