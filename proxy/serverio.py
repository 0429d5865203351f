"""What an API handler sees of the HTTP server, whichever server it runs on.

Two servers implement it: the raw asyncio HTTP/1.1 server (proxy/rawserver.py, the default: an
`asyncio.Protocol` per connection fed to llhttp through httptools) and aiohttp's (proxy/aiohttp_io.py,
which adapts `web.Request`).  The API handlers (proxy/handlers.py), the dispatcher and the relay use
only this module, so each request takes one code path whichever server read it:

    request.method, request.path, request.headers.get("X-Api-Key")   # names case-insensitive
    request.query.get("key"), request.match_info["target"]
    await request.read()            # the whole body; BodyTooLarge / BodyMalformed (BodyError)
    request.body_complete()         # True when the body came with the head (no wait, no timer)
    out = await request.stream(200, headers)   # commits the head; then await out.write(bytes)
    return Answer(status, body, headers)       # or the StreamOut, which the server then ends

A handler returns an `Answer` (whole body; the server adds Content-Length) or the `StreamOut` it
wrote (the server ends the chunked body).  `Answer.close` asks for the connection to be closed after
the answer (e.g. after a 408: what is left of a trickled body is not waited for).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

JSON_TYPE = "application/json"


class BodyError(Exception):
    """The request body cannot be had: the handler answers in the caller's format and the connection
    is closed after the answer."""


class BodyTooLarge(BodyError):
    """The request body is over the server's bound (announced, or counted as it came)."""


class BodyMalformed(BodyError):
    """The request body's framing is broken (bad chunked encoding, or the client closed mid-body)."""


class Answer:
    """A whole answer.  `headers` must hold the Content-Type; the server adds the framing headers."""

    __slots__ = ("status", "body", "headers", "close")

    def __init__(self, status: int, body: bytes, headers: dict[str, str], close: bool = False) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.close = close


def json_answer(body: bytes, headers: dict[str, str] | None = None, status: int = 200) -> Answer:
    """A JSON answer; `headers` is the caller's fresh dict, taken over (not copied) and completed."""
    if headers is None:
        return Answer(status, body, {"Content-Type": JSON_TYPE})
    headers["Content-Type"] = JSON_TYPE
    return Answer(status, body, headers)


class StreamOut(Protocol):
    """A committed streamed answer (chunked).  `write` waits while the client's socket buffer is over
    its high-water mark and raises ConnectionError once the client is gone; `transport` is the
    client's (None once closed), for the relay's write deadlines (`get_write_buffer_size`, `abort`)."""

    status: int
    transport: asyncio.Transport | None

    async def write(self, data: bytes) -> None: ...


class RequestHead(Protocol):
    """What the key check reads of any request (an Inbound, or aiohttp's web.Request on other routes)."""

    path: str  # percent-decoded, without the query
    headers: Mapping[str, str]  # case-insensitive names
    query: Mapping[str, str]  # first value of each name


class Inbound(RequestHead, Protocol):
    """One client request as the API handlers see it."""

    method: str
    match_info: Mapping[str, str]  # the route's `{name}` segments
    content_length: int | None

    def body_complete(self) -> bool: ...

    async def read(self) -> bytes: ...

    async def stream(self, status: int, headers: dict[str, str]) -> StreamOut: ...


Reply = Answer | StreamOut
ApiCall = Callable[[Inbound], Awaitable[Reply]]
