"""The raw server's side of proxy/serverio.py: one request as a handler sees it (`RawRequest`, an
`Inbound`), its committed chunked answer (`RawStream`, a `StreamOut`), and the bytes of an answer's head.

A RawRequest is made by the connection (proxy/rawserver.py) when llhttp has parsed a head on one of
the fast routes; the connection's parser callbacks then append the body to it (`_body`, llhttp has
de-chunked it) and mark it complete or failed.  `read()` only waits when the body is not all there
yet, on a future the callbacks resolve: the common case (body in the same read as the head) costs no
future and no timer.  The handler bounds that wait itself (asyncio.timeout around read()).

Answer heads are built as one str and encoded once: the status line comes from a table built at
import, the Date from a per-second cache, and a header name or value holding CR, LF or NUL makes the
whole head refused (never written) rather than letting a handler split the answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from email.utils import formatdate
from http import HTTPStatus
from types import MappingProxyType
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from .headers import Headers
from .serverio import JSON_TYPE, Answer, ApiCall, BodyError

if TYPE_CHECKING:
    from .rawserver import RawConnection

NO_VALUES: Mapping[str, str] = MappingProxyType({})
STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n" for s in HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNKED = "Transfer-Encoding: chunked\r\n"
CLOSE = "Connection: close\r\n"
LAST_CHUNK = b"0\r\n\r\n"
INTERNAL_ERROR = Answer(
    500,
    b'{"error":{"message":"internal error in the gateway","type":"server_error","param":null,"code":null}}',
    {"Content-Type": JSON_TYPE},
)

_date = [0, ""]  # the second it was made for, the Date value


def http_date() -> str:
    now = int(time.time())
    if now != _date[0]:
        _date[0] = now
        _date[1] = formatdate(now, usegmt=True)
    return _date[1]  # type: ignore[return-value]


def answer_head(status: int, headers: dict[str, str], framing: str, close: bool) -> bytes | None:
    """Status line, `headers`, the framing header, Date (and Connection: close): None when a name or
    value would break the framing (CR, LF, NUL) or is not text."""
    line = STATUS_LINES.get(status) or f"HTTP/1.1 {status} \r\n"
    try:
        if headers:
            block = "\r\n".join(map(": ".join, headers.items()))
            n = len(headers) - 1  # the CRLFs the join put in: any other CR or LF came from a handler
            if block.count("\n") != n or block.count("\r") != n or "\0" in block:
                return None
            text = f"{line}{block}\r\n{framing}Date: {http_date()}\r\n{CLOSE if close else ''}\r\n"
        else:
            text = f"{line}{framing}Date: {http_date()}\r\n{CLOSE if close else ''}\r\n"
        return text.encode()
    except (TypeError, UnicodeEncodeError):  # a value that is not a str, or holds a lone surrogate
        return None


class RawRequest:
    """One request on a fast route (an `Inbound`)."""

    __slots__ = ("method", "path", "headers", "match_info", "content_length", "handler", "keep_alive",
                 "_conn", "_qs", "_query", "_body", "_nbody", "_complete", "_error", "_waiter", "_expect",
                 "_stream", "_close", "_done")

    def __init__(self, conn: RawConnection, handler: ApiCall, method: str, path: str, match_info: Mapping[str, str],
                 qs: bytes, headers: dict[str, str], content_length: int | None, keep_alive: bool,
                 expect: bool) -> None:
        self.method = method
        self.path = path
        self.headers = Headers(headers)
        self.match_info = match_info
        self.content_length = content_length
        self.handler = handler
        self.keep_alive = keep_alive
        self._conn = conn
        self._qs = qs
        self._query: Mapping[str, str] | None = None
        self._body: list[bytes] = []
        self._nbody = 0  # body bytes received (all of them, also those dropped)
        self._complete = False  # llhttp saw the end of the message
        self._error: type[BodyError] | None = None  # what read() raises
        self._waiter: asyncio.Future | None = None
        self._expect = expect  # Expect: 100-continue not answered yet
        self._stream: RawStream | None = None
        self._close = False  # the connection closes after this answer
        self._done = False  # answered: what is left of the body is dropped

    @property
    def query(self) -> Mapping[str, str]:
        query = self._query
        if query is None:
            if self._qs:
                parsed: dict[str, str] = {}
                for name, value in parse_qsl(self._qs.decode("utf-8", "surrogateescape"), keep_blank_values=True):
                    parsed.setdefault(name, value)
                query = parsed
            else:
                query = NO_VALUES
            self._query = query
        return query

    def body_complete(self) -> bool:
        """True when read() will not wait: the body is all here (or it failed already)."""
        return self._complete or self._error is not None

    async def read(self) -> bytes:
        if not self._complete and self._error is None:
            conn = self._conn
            if self._expect:
                self._expect = False
                conn.send_continue()
            while not self._complete and self._error is None:
                self._waiter = conn.loop.create_future()
                await self._waiter
        if self._error is not None:
            raise self._error()
        body = self._body
        if len(body) == 1:
            return body[0]
        joined = b"".join(body)
        self._body = [joined]
        return joined

    async def stream(self, status: int, headers: dict[str, str]) -> RawStream:
        if self._stream is not None:
            raise RuntimeError("the answer is already committed")
        conn = self._conn
        close = conn.closing_after(self)
        head = answer_head(status, headers, CHUNKED, close)
        if head is None:
            raise ValueError("an answer header name or value holds CR, LF or NUL, or is not text")
        transport = conn.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        self._close = close
        # The head goes out with the first chunk (the relay writes one at once): one send, not two.
        self._stream = stream = RawStream(conn, status, head)
        return stream

    # -- the connection's side --------------------------------------------------------------------

    def sent(self) -> bool:
        """Whether a byte of the answer went out (a stream's head waits for its first chunk)."""
        stream = self._stream
        return stream is not None and stream._head is None

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def fail(self, error: type[BodyError]) -> None:
        if self._error is None and not self._complete:
            self._error = error
            self._body = []
            self.wake()


class RawStream:
    """A committed chunked answer (a `StreamOut`)."""

    __slots__ = ("_conn", "status", "_head")

    def __init__(self, conn: RawConnection, status: int, head: bytes) -> None:
        self._conn = conn
        self.status = status
        self._head: bytes | None = head  # until the first write takes it along

    def last(self) -> bytes:
        """The bytes that end the answer (with the head, if nothing was written)."""
        head, self._head = self._head, None
        return head + LAST_CHUNK if head else LAST_CHUNK

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._conn.transport

    async def write(self, data: bytes) -> None:
        conn = self._conn
        transport = conn.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        if not data:  # an empty chunk would end the answer
            return
        head = self._head
        if head is None:
            transport.write(b"".join((b"%x\r\n" % len(data), data, b"\r\n")))
        else:
            self._head = None
            transport.write(b"".join((head, b"%x\r\n" % len(data), data, b"\r\n")))
        if conn.write_paused:
            await conn.drain()
