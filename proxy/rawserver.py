"""The raw asyncio HTTP/1.1 server for the API routes: an `asyncio.Protocol` per connection feeding
llhttp (httptools), with aiohttp's server behind it for everything else.

How this works.  Each read goes straight into llhttp; its callbacks collect the request line and the
headers, and when the head is complete the connection decides: a plain HTTP/1.1 request on one of the
fast routes (a method + a static path, or a path ending in one `{name}` segment) becomes a RawRequest
(proxy/rawrequest.py) and its handler runs in a task at once, while the body keeps arriving into it.
Anything else -- another route, a path with `%`, HTTP/1.0, an upgrade, an unknown Expect, a head llhttp
refuses or one over HEAD_LIMIT -- is handed over: the connection's transport is given to a fresh
aiohttp RequestHandler (the `fallback`) together with every byte received since that request's first
one, so aiohttp serves it, and the rest of the connection, exactly as it would have on its own.  That
needs the request's first byte at a known offset: it is when the request began a read; a request that
began in the middle of a read (after a pipelined one) is not handed over: the answers before it are
written and the connection closed, and the client retries it on a new connection (RFC 9112 9.3.2).

Requests on a connection are answered in order, one handler at a time: pipelined heads wait in a
queue (reading pauses past AHEAD_LIMIT bytes of them).  An `Answer` is written as one transport.write;
a handler's StreamOut is ended with the last chunk.  One loop timer per connection, re-armed lazily,
closes it when idle for `keepalive_timeout` (after connect or after the last answer) or when a head
has not completed within that time of its first byte.  The client going away cancels the running
handler (the relay stops its upstream request on CancelledError).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .rawconn import RawConnection
from .rawroutes import Routes
from .serverio import ApiCall


class RawServer:
    """The listening socket, the fast routes and the connections being served."""

    def __init__(self, routes: list[tuple[str, str, ApiCall]], fallback: Callable[[], asyncio.Protocol], *,
                 max_body: int, keepalive_timeout: float) -> None:
        self.routes = Routes(routes)
        self.fallback = fallback
        self.max_body = max_body
        self.keepalive_timeout = keepalive_timeout
        self.closing = False
        self.conns: set[RawConnection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._port = 0
        self._drained: asyncio.Future | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: RawConnection(self, loop), host, port, reuse_port=reuse_port or None, backlog=1024)
        self._port = self._server.sockets[0].getsockname()[1]

    @property
    def port(self) -> int:
        return self._port

    @property
    def in_flight(self) -> int:
        """Connections with a request being served or waiting to be."""
        return sum(1 for conn in self.conns if conn.busy)

    def lost(self, conn: RawConnection) -> None:
        self.conns.discard(conn)
        drained = self._drained
        if drained is not None and not self.conns and not drained.done():
            drained.set_result(None)

    async def shutdown(self, timeout: float) -> None:
        """Stop listening, close idle connections, let those serving a request finish it (closing after
        the answer) for up to `timeout` seconds, then cancel the rest.  Connections handed over to
        aiohttp are its own (its runner's cleanup closes them)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.conns):
            if not conn.busy:
                conn.close()
        if self.conns:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._drained
            except TimeoutError:
                pass
        tasks = [task for conn in list(self.conns) if (task := conn.abort()) is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
