"""One client connection of the raw server (proxy/rawserver.py tells how the whole works): llhttp's
callbacks, the choice between the fast path and aiohttp, the handler runs in order, the answers, the
timer, flow control both ways.

State of a connection: _PARSING (every read goes to llhttp) until a request not for the fast path is
seen; then llhttp is stopped and the connection is _HANDOVER (the reads are kept, for aiohttp, and
given to it once the answers before are written) or _CLOSING (the reads are dropped; the connection
closes after those answers).  The raw bytes of a request are kept from its first byte while its head
is incomplete, when that first byte began a read (`_start_known`): only then can it be handed over.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections import deque
from typing import TYPE_CHECKING

import httptools
from httptools import HttpParserError, HttpParserUpgrade

from .rawrequest import (
    CONTINUE,
    INTERNAL_ERROR,
    NO_VALUES,
    RawRequest,
    answer_head,
)
from .serverio import Answer, BodyMalformed, BodyTooLarge

if TYPE_CHECKING:
    from .rawserver import RawServer

log = logging.getLogger("llm_proxy")

HEAD_LIMIT = 16 * 1024  # a head still incomplete past this goes to aiohttp (and its limits)
AHEAD_LIMIT = 64 * 1024  # pipelined bytes buffered behind the request being served before reads pause
BIG_BODY = 64 * 1024  # an answer body this long is written after its head, not copied behind it
_PARSING, _HANDOVER, _CLOSING = 0, 1, 2  # connection states (see above)


class _Stop(Exception):
    """Raised in a parser callback to stop llhttp: the request is not for the fast path."""


class RawConnection(asyncio.Protocol):
    """One client connection: parses, routes, runs handlers in order, writes answers."""

    __slots__ = ("_server", "loop", "_time", "transport", "_parser", "_url", "_headers", "_in_message",
                 "_boundary", "_start_known", "_head_done", "_head_len", "_big", "_hbytes", "_target", "_current", "_queue", "_task",
                 "_raw", "_raw_more", "_raw_len", "_state", "_read_paused", "_ahead", "write_paused", "_drain",
                 "_deadline", "_timer", "_unsent")

    def __init__(self, server: RawServer, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self.loop = loop
        self._time = loop.time
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._in_message = False  # llhttp is inside a message (its first byte came)
        self._boundary = False  # this read began between two messages
        self._start_known = False  # the message being parsed began a read (it can be handed over)
        self._head_done = False
        self._head_len = 0  # bytes received in earlier reads while this head was incomplete
        self._big = False  # this read could complete a head over HEAD_LIMIT: count its bytes
        self._hbytes = 0  # header bytes counted (when _big)
        self._target: RawRequest | None = None  # the request whose body llhttp is reading
        self._current: RawRequest | None = None  # the request being served
        self._queue: deque[RawRequest] = deque()  # complete heads waiting for their turn
        self._task: asyncio.Task | None = None
        self._raw: bytes | None = None  # the reads since the message's first byte: for a handover
        self._raw_more: list[bytes] | None = None
        self._raw_len = 0
        self._state = _PARSING  # or _HANDOVER / _CLOSING once a request not ours is seen (parser stopped)
        self._read_paused = False
        self._ahead = 0  # bytes read while requests were queued
        self.write_paused = False
        self._drain: asyncio.Future | None = None
        self._deadline = 0.0  # when the idle / head timer closes the connection (unless busy)
        self._timer: asyncio.TimerHandle | None = None
        self._unsent = 0  # bytes written, not yet sent, when the timer last saw some

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._queue)

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._server.conns.add(self)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._state:
            if self._state == _HANDOVER:
                self._keep(data)
            return  # _CLOSING: nothing more is read from this connection
        if not self._in_message:
            self._boundary = True
            self._raw = data
            self._raw_more = None
            self._raw_len = len(data)
        else:
            self._boundary = False
            if self._raw is not None:
                self._keep(data)
        self._big = len(data) > HEAD_LIMIT - self._head_len
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade):
            self._parse_error()
        else:
            if self._in_message and not self._head_done:
                self._head_len += len(data)
                if self._head_len > HEAD_LIMIT:
                    self._not_fast()
            elif self._queue:
                self._ahead += len(data)
                if self._ahead > AHEAD_LIMIT:
                    self._pause()
        if self._state and not self.busy:
            self._leave()

    def eof_received(self) -> None:
        return None  # the transport closes; a handler still running is cancelled (as aiohttp does)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._parser = None  # type: ignore[assignment]  # (it holds our callbacks: free both now)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server.lost(self)
        if self._task is not None:
            self._task.cancel()
        if self._current is not None:
            self._current.fail(BodyMalformed)
        self._queue.clear()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("the client closed the connection"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drain = self._drain
        if drain is not None:
            self._drain = None
            if not drain.done():
                drain.set_result(None)
        if self._current is None and self.transport is not None:
            self._next()

    # -- llhttp callbacks ---------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._start_known = self._boundary
        self._boundary = False
        self._head_done = False
        self._head_len = self._hbytes = 0
        self._url = b""
        self._headers = {}
        if self._current is None:
            self._arm()  # the head must be complete within keepalive_timeout of its first byte

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = _NAMES.get(name)
        if key is None:
            key = name.decode("utf-8", "surrogateescape").lower()
            if len(_NAMES) < 512 and len(name) <= 64:
                _NAMES[name] = key
        if key not in self._headers:  # a repeated name keeps its first value
            self._headers[key] = value.decode("utf-8", "surrogateescape")
        if self._big:
            self._hbytes += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._head_done = True
        if self._big and self._head_len + self._hbytes + len(self._url) > HEAD_LIMIT:
            req = None  # aiohttp applies its own limits to such a head
        else:
            req = self._request()
        self._head_len = 0
        if req is None:
            self._not_fast()
            raise _Stop
        self._raw = self._raw_more = None
        self._target = req
        if req.content_length is not None and req.content_length > self._server.max_body:
            req.fail(BodyTooLarge)
        if self.busy:
            self._queue.append(req)
        else:
            self._serve(req)

    def on_body(self, chunk: bytes) -> None:
        req = self._target
        if req is None:
            return
        req._nbody += len(chunk)
        if req._error is not None:
            return
        if req._nbody > self._server.max_body:
            if req._done:  # answered already: no need to hear the rest
                self.close()
            else:
                req.fail(BodyTooLarge)
        elif not req._done:
            req._body.append(chunk)

    def on_message_complete(self) -> None:
        self._in_message = False
        req = self._target
        if req is not None:
            self._target = None
            req._complete = True
            if req._waiter is not None:  # (the common case, a body that came with its head, has none)
                req.wake()

    # -- what the head asks for --------------------------------------------------------------------

    def _request(self) -> RawRequest | None:
        """The RawRequest for the head just parsed, or None when it is for aiohttp."""
        parser = self._parser
        found = self._server.routes.match(parser.get_method(), self._url)
        headers = self._headers
        # (llhttp's upgrade flag needs an Upgrade header, or CONNECT, which no fast route has)
        if found is None or "upgrade" in headers or parser.get_http_version() != "1.1":
            return None
        expect = headers.get("expect")
        if expect is not None and expect.lower() != "100-continue":
            return None
        length = headers.get("content-length")
        chunked = headers.get("transfer-encoding")
        if chunked is not None:
            if chunked.lower() != "chunked":
                return None
            length = None
        (handler, method, path), match_info, qs = found
        return RawRequest(self, handler, method, path, match_info, qs, headers,
                          None if length is None else int(length), parser.should_keep_alive(), expect is not None)

    def _not_fast(self) -> None:
        """The request being parsed is not for us: hand it over if it began a read, else close after
        the answers before it."""
        self._state = _HANDOVER if self._start_known else _CLOSING
        self._target = None

    def _parse_error(self) -> None:
        if self._state:  # our own _Stop: the state says what follows
            return
        req = self._target
        if req is not None:  # the body of a fast request is broken: answer it, then close
            req.fail(BodyMalformed)
            self._target = None
            self._state = _CLOSING
        elif self._in_message and not self._head_done:
            self._not_fast()  # aiohttp answers a broken head its own way
        else:
            self._state = _CLOSING  # e.g. bytes after a `Connection: close` request

    def _keep(self, data: bytes) -> None:
        if self._raw_more is None:
            self._raw_more = [data]
        else:
            self._raw_more.append(data)
        self._raw_len += len(data)
        if self._state == _HANDOVER and self._raw_len > AHEAD_LIMIT:
            self._pause()

    def _leave(self) -> None:
        """Nothing is being served and the parser stopped: hand the connection over, or close it."""
        transport = self.transport
        if transport is None:
            return
        if self._state == _CLOSING or self._server.closing:
            self.close()
            return
        data = self._raw if self._raw_more is None else b"".join((self._raw or b"", *self._raw_more))
        self._state = _CLOSING
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport = None
        self._parser = None  # type: ignore[assignment]
        self._server.conns.discard(self)
        proto = self._server.fallback()
        transport.set_protocol(proto)
        if self._read_paused:  # before aiohttp sees a byte: it may pause reading itself
            transport.resume_reading()
        proto.connection_made(transport)
        if data:
            proto.data_received(data)

    # -- serving -----------------------------------------------------------------------------------

    def _serve(self, req: RawRequest) -> None:
        self._current = req
        self._task = self.loop.create_task(self._run(req))

    async def _run(self, req: RawRequest) -> None:
        try:
            reply = await req.handler(req)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in a handler: logged without the request (nor the message)
            log.error("unhandled %s in the API handler for %s %s:\n%s", type(exc).__qualname__, req.method,
                      _where(req),
                      "".join(traceback.format_tb(exc.__traceback__)).rstrip())
            reply = None if req.sent() else INTERNAL_ERROR
        else:
            if req._stream is not None and reply is not req._stream:
                log.error("the API handler for %s %s committed a stream and returned something else",
                          req.method, _where(req))
                reply = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._current = None
        self._task = None
        if reply is None:  # the answer is broken mid-way: the client can only see it end
            self.close()
            return
        if reply is req._stream:
            transport.write(reply.last())
        elif reply.__class__ is Answer or isinstance(reply, Answer):
            self._write(req, reply)
        else:
            log.error("the API handler for %s %s returned a %s", req.method, _where(req), type(reply).__qualname__)
            self._write(req, INTERNAL_ERROR)
        if req._close or self._server.closing:
            self.close()
        else:
            if not req._complete:
                req._done = True  # the rest of its body is read and dropped
                req._body = []
            self._next()

    def _write(self, req: RawRequest, answer: Answer) -> None:
        close = answer.close or self.closing_after(req)
        body = answer.body
        head = answer_head(answer.status, answer.headers, f"Content-Length: {len(body)}\r\n", close)
        if head is None:
            log.error("an answer header for %s %s holds CR, LF or NUL, or is not text: refused",
                      req.method, _where(req))
            answer = INTERNAL_ERROR
            body = answer.body
            head = answer_head(500, answer.headers, f"Content-Length: {len(body)}\r\n", close)
        if len(body) < BIG_BODY:
            self.transport.write(head + body)  # type: ignore[union-attr,operator]
        else:  # not copied: one writev
            self.transport.writelines((head, body))  # type: ignore[union-attr,arg-type]
        req._close = close

    def closing_after(self, req: RawRequest) -> bool:
        """Whether the connection closes after `req`'s answer."""
        return (not req.keep_alive or req._error is not None or self._server.closing
                or (self._state == _CLOSING and not self._queue))

    def _next(self) -> None:
        """The answer is written: serve the next request, hand over, close, or wait (idle)."""
        if self.write_paused:
            return  # resume_writing comes back here
        if self._queue:
            req = self._queue.popleft()
            if not self._queue:
                self._ahead = 0
                self._resume()
            self._serve(req)
        elif self._state:
            self._leave()
        else:
            self._arm()
            self._resume()

    def send_continue(self) -> None:
        if self.transport is not None:
            self.transport.write(CONTINUE)

    async def drain(self) -> None:
        drain = self._drain
        if drain is None:
            drain = self._drain = self.loop.create_future()
        await drain

    # -- timers, flow control, closing -------------------------------------------------------------

    def _arm(self) -> None:
        self._deadline = deadline = self._time() + self._server.keepalive_timeout
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None or self.busy:
            return
        if self._time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._expire)
        elif not (unsent := transport.get_write_buffer_size()):
            transport.close()  # idle, or a head too slow
        elif not self._unsent or unsent < self._unsent:
            self._unsent = unsent  # the client reads what was written, if slowly: one more period
            self._arm()
        else:
            transport.abort()  # its client has read nothing of it for keepalive_timeout

    def _pause(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Close once what was written has gone out; a client that does not read it within
        keepalive_timeout is dropped (the timer aborts the connection)."""
        if self.transport is not None:
            self.transport.close()
            self._arm()

    def abort(self) -> asyncio.Task | None:
        """Shutdown's deadline passed: cancel the handler, drop the connection."""
        task = self._task
        if task is not None:
            task.cancel()
        if self.transport is not None:
            self.transport.abort()
        return task


def _where(req: RawRequest) -> str:
    """The path of a request for a log line: a templated route's segment is client text, left out."""
    return req.path if req.match_info is NO_VALUES else "(templated route)"


_NAMES: dict[bytes, str] = {}  # raw header name -> lower-cased (bounded in count and size: names are client text)
