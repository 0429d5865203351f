"""One upstream HTTP/1.1 connection (an asyncio.Protocol fed to llhttp through httptools) and the
response it is reading.

How this works.  The pool (proxy/rawpool.py) opens a Connection and `send`s a request's bytes; the
Connection creates a RawResponse and feeds every read straight into the parser.  The parser's
callbacks fill the response: headers (bounded in size and count), then the body as the bytes objects
llhttp hands out (one per read, not re-joined), de-chunked and, for gzip/deflate, decompressed in
steps as the reader drains them (a small compressed body cannot inflate past HIGH_WATER at once).  The
reader awaits a future that the callbacks resolve; its deadline is a loop timer, not a task-level
timeout scope, so a chunk that is already buffered costs no timer at all.  When the reader falls
behind by more than HIGH_WATER bytes the socket stops being read (pause_reading) until it catches up.

Framing comes from llhttp: Content-Length, chunked (extensions and trailers skipped), 1xx answers
skipped, 204/304 bodiless; a body without either header ends when the upstream closes the connection.
`release()` gives the connection back to the pool only when the response was read to its end and both
sides agreed to keep it alive; anything else (a cancelled reader, a broken body) closes it.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from typing import TYPE_CHECKING

import httptools

from .headers import Headers
from .upstream_client import BadResponse, BodyTooLarge, ConnectionBroken, UpstreamError, too_large

if TYPE_CHECKING:
    from .rawpool import RawClient

MAX_HEADER_BYTES = 64 * 1024  # status line and header block of one response
MAX_HEADERS = 128
HIGH_WATER = 256 * 1024  # body bytes buffered for a slow reader before the socket is paused
LOW_WATER = 64 * 1024  # ... and resumed once the reader is back under this
INFLATE_STEP = 64 * 1024  # decoded bytes produced by one decompress call
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class RawResponse:
    """The response to one request: `status` is 0 until the headers are in."""

    __slots__ = ("_conn", "_loop", "status", "headers", "head_only", "any_bytes", "_chunks", "_buffered", "_done",
                 "_error", "_waiter", "_decoder", "_compressed", "_ending", "until_eof")

    def __init__(self, conn: Connection, head_only: bool) -> None:
        self._conn: Connection | None = conn
        self._loop = conn.loop
        self.status = 0
        self.headers: Headers = Headers({})
        self.head_only = head_only  # a HEAD request: no body whatever the headers say
        self.any_bytes = False  # any byte of a response arrived (else a failure may be retried)
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future | None = None
        self._decoder = None
        self._compressed = b""  # received, not yet inflated: waits for the reader (a zip bomb stays small)
        self._ending = False  # the message ended while _compressed was not empty
        self.until_eof = False  # no Content-Length, not chunked: the body ends when the upstream closes

    # -- the reader's side ------------------------------------------------------------------------

    async def wait_headers(self, deadline: float) -> None:
        while not self.status:
            if self._error is not None:
                raise self._error
            await self._wait(deadline)

    async def chunk(self, deadline: float) -> bytes:
        """The body bytes that arrived since the last call (waiting for some); b"" at the end."""
        chunks = self._chunks
        while not chunks:
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            await self._wait(deadline)
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._drained()
        return data

    async def read(self, deadline: float, limit: int) -> bytes:
        """The whole body, of at most `limit` bytes (decoded) else BodyTooLarge."""
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:  # announced too large: not a byte of it is read
            raise self._refuse(limit)
        parts: list[bytes] = []
        size = 0
        chunks = self._chunks
        while True:
            if chunks:
                size += sum(map(len, chunks))
                if size > limit:
                    raise self._refuse(limit)
                parts.extend(chunks)
                chunks.clear()
                self._drained()
            elif self._error is not None:
                raise self._error
            elif self._done:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            else:
                await self._wait(deadline)

    def _refuse(self, limit: int) -> BodyTooLarge:
        """Stop reading a body over `limit`: the error makes release() close the connection, even
        when the last byte had already arrived."""
        error = self._error = too_large(limit)
        self._chunks.clear()
        if self._conn is not None:
            self._conn.abort()
        return error

    def release(self) -> None:
        """Give the connection back (read to its end) or close it (anything else); idempotent."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.finish(self._done and self._error is None)

    async def _wait(self, deadline: float) -> None:
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _drained(self) -> None:
        self._buffered = 0
        if self._compressed:  # the reader caught up: inflate the next part of what is already here
            try:
                self._inflate(self._compressed)
                if self._ending and not self._compressed:
                    self._complete()
            except UpstreamError as exc:
                self._fail(exc)
                if self._conn is not None:
                    self._conn.abort()
                return
        conn = self._conn
        if conn is not None and conn.paused and not self._compressed and self._buffered <= HIGH_WATER:
            conn.resume()

    # -- the connection's side --------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _start(self, status: int, headers: dict[str, str], bodiless: bool) -> None:
        coding = headers.get("content-encoding", "identity").strip().lower()
        if coding != "identity" and not bodiless:
            wbits = _DECODERS.get(coding)
            if wbits is None:
                raise BadResponse(f"unsupported Content-Encoding {coding[:40]!r}")
            self._decoder = zlib.decompressobj(wbits)
        self.until_eof = not bodiless and "content-length" not in headers and "transfer-encoding" not in headers
        self.headers = Headers(headers)
        self.status = status
        self._wake()

    def _feed(self, data: bytes) -> None:
        if self._decoder is not None:
            self._inflate(self._compressed + data if self._compressed else data)
        else:
            self._push(data)

    def _push(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and self._conn is not None and not self._conn.paused:
            self._conn.pause()
        self._wake()

    def _inflate(self, data: bytes) -> None:
        """Decode `data` in steps while the reader keeps up (at most HIGH_WATER decoded bytes buffered):
        a few KiB of gzip can stand for GiBs.  The rest is kept, and the socket paused, until the
        reader drains what was decoded."""
        decoder = self._decoder
        assert decoder is not None
        while data and self._buffered <= HIGH_WATER:
            try:
                out = decoder.decompress(data, INFLATE_STEP)
            except zlib.error:
                raise BadResponse("invalid compressed body") from None
            data = decoder.unconsumed_tail
            if out:
                self._push(out)
        self._compressed = data
        if data and self._conn is not None and not self._conn.paused:
            self._conn.pause()

    def _complete(self) -> None:
        if self._compressed:  # inflated as the reader drains; completes then
            self._ending = True
            return
        if self._decoder is not None:
            tail = self._decoder.flush()
            if not self._decoder.eof:
                raise BadResponse("truncated compressed body")
            if tail:
                self._chunks.append(tail)
        self._done = True
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if not self._done and self._error is None:
            self._error = error
            self._wake()


class _Unexpected(Exception):
    """Raised inside a parser callback: stops the parser."""


class Connection(asyncio.Protocol):
    """One keep-alive connection to one origin; at most one request on it at a time."""

    def __init__(self, pool: RawClient, origin: tuple[str, str, int], loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: RawResponse | None = None
        self.state = "busy"  # busy | idle | gone (the pool's view; "gone" is counted out of the pool)
        self.served = 0  # responses completed on this connection: > 0 means it was reused
        self.paused = False
        self.keep_alive = True
        self.idle_timer: asyncio.TimerHandle | None = None
        self._headers: dict[str, str] = {}
        self._head_bytes = 0  # bytes received before the headers were complete
        self._header_size = 0
        self._informational = False

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        resp = self.response
        if resp is None or resp._done:  # bytes nobody asked for: the connection is out of step
            self.keep_alive = False
            if resp is None:
                self.abort()
            return
        resp.any_bytes = True
        if not resp.status:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except UpstreamError as exc:
            self._broken(resp, exc)
        except (httptools.HttpParserError, _Unexpected) as exc:
            cause = exc.__context__ if isinstance(exc.__context__, UpstreamError) else None
            self._broken(resp, cause or BadResponse(f"malformed response ({type(exc).__name__}: {exc})"))
        else:
            if not resp.status and self._head_bytes > MAX_HEADER_BYTES:
                self._broken(resp, BadResponse(f"response header block over {MAX_HEADER_BYTES} bytes"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost ends a close-delimited body

    def connection_lost(self, exc: Exception | None) -> None:
        self.keep_alive = False
        resp = self.response
        if resp is not None and not resp._done:
            if exc is None and resp.status and resp.until_eof and not resp._error:
                try:
                    resp._complete()  # a close-delimited body ends here
                except UpstreamError as err:
                    resp._fail(err)
            else:
                what = "closed" if exc is None else f"reset ({type(exc).__name__})"
                resp._fail(ConnectionBroken(f"connection {what} " +
                                            ("mid-body" if resp.status else "before the response headers")))
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.pool._lost(self)

    # -- httptools callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        resp = self.response
        if resp is None or resp._done or (resp.status and not self._informational):
            raise _Unexpected("a second response to one request")
        self._headers = {}
        self._header_size = 0
        self._informational = False

    def on_header(self, name: bytes, value: bytes) -> None:
        # Checked here too: a block that arrived in one read, and a chunked body's trailers.
        self._header_size += len(name) + len(value)
        if self._header_size > MAX_HEADER_BYTES:
            raise BadResponse(f"response header block over {MAX_HEADER_BYTES} bytes")
        resp = self.response
        if resp is not None and resp.status and not self._informational:
            return  # trailers: not used
        headers = self._headers
        if len(headers) >= MAX_HEADERS:
            raise BadResponse(f"more than {MAX_HEADERS} response headers")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = headers.get(key)
        headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue, 103 Early Hints...: the real answer follows
            if status == 101:
                raise BadResponse("unrequested protocol switch (101)")
            self._informational = True
            return
        resp = self.response
        assert resp is not None  # on_message_begin checked
        bodiless = resp.head_only or status in (204, 304)
        resp._start(status, self._headers, bodiless)
        if resp.head_only:  # llhttp would wait for the body the headers announce
            self.keep_alive = False
            resp._complete()

    def on_body(self, body: bytes) -> None:
        resp = self.response
        if resp is not None and not resp._done:
            resp._feed(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        resp = self.response
        if resp is not None and not resp._done:
            if not self.parser.should_keep_alive():
                self.keep_alive = False
            resp._complete()

    # -- the pool's side --------------------------------------------------------------------------

    def send(self, head: bytes, body: bytes | None, head_only: bool) -> RawResponse:
        resp = self.response = RawResponse(self, head_only)
        self._head_bytes = 0
        transport = self.transport
        if transport is None or transport.is_closing():
            resp._fail(ConnectionBroken("connection closed before the request was sent"))
            return resp
        if body and len(body) > 16384:
            transport.writelines((head, body))  # no copy of a large body
        else:
            transport.write(head + body if body else head)
        return resp

    def finish(self, complete: bool) -> None:
        """The response is released: back to the pool when clean, else closed."""
        self.response = None
        if complete:
            self.served += 1
        if self.paused:
            self.resume()
        self.pool._release(self, complete and self.keep_alive)

    def pause(self) -> None:
        self.paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def abort(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()

    def _broken(self, resp: RawResponse, error: UpstreamError) -> None:
        resp._fail(error)
        self.abort()
