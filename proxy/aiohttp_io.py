"""The API handlers on aiohttp's server: `web.Request` as a serverio.Inbound, and answers back.

aiohttp serves what the raw server hands over to it (every route that is not an API call, and what
the raw server's fast path does not take: see proxy/rawserver.py), and everything with
`server.http: aiohttp`.  The handlers are the same on both servers; only this glue differs.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .serverio import Answer, ApiCall, BodyMalformed, BodyTooLarge, Reply


class AiohttpInbound:
    """A `web.Request` as the handlers see a request (serverio.Inbound)."""

    __slots__ = ("request", "method", "path", "headers", "query", "match_info", "content_length")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.method = request.method
        self.path = request.path
        self.headers = request.headers
        self.query = request.query
        self.match_info = request.match_info
        self.content_length = request.content_length

    def body_complete(self) -> bool:
        return self.request.content.is_eof()

    async def read(self) -> bytes:
        try:
            return await self.request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge from None
        except HttpProcessingError:
            raise BodyMalformed from None

    async def stream(self, status: int, headers: dict[str, str]) -> AiohttpStream:
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(self.request)
        return AiohttpStream(resp, self.request)


class AiohttpStream:
    """A prepared `web.StreamResponse` as a serverio.StreamOut."""

    __slots__ = ("response", "request", "status")

    def __init__(self, response: web.StreamResponse, request: web.Request) -> None:
        self.response = response
        self.request = request
        self.status = response.status

    @property
    def transport(self):
        return self.request.transport

    async def write(self, data: bytes) -> None:
        await self.response.write(data)


def answer_response(answer: Answer) -> web.Response:
    return web.Response(status=answer.status, body=answer.body, headers=answer.headers)


async def aiohttp_reply(reply: Reply, request: web.Request) -> web.StreamResponse:
    if isinstance(reply, AiohttpStream):
        return reply.response
    if not isinstance(reply, Answer):
        raise TypeError(f"an aiohttp route got {type(reply).__name__}")
    resp = answer_response(reply)
    if reply.close:
        # Send it, then drop the connection: what is left of a trickled or refused body is not
        # waited for (aiohttp would otherwise linger up to 10 s reading it).
        resp.force_close()
        try:
            await resp.prepare(request)
            await resp.write_eof()
        except ConnectionError:
            pass
        request.protocol.force_close()
    return resp


def aiohttp_route(call: ApiCall):
    """An aiohttp handler serving an API call."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await aiohttp_reply(await call(AiohttpInbound(request)), request)

    return handler
