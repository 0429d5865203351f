"""The raw upstream HTTP/1.1 client of one backend: keep-alive connections per origin, bounded.

At most `max_connections` connections exist at once (in use, idle or being opened) across the
origins a backend talks to; a request that finds none free waits in line (FIFO) within its own
deadline.  Idle connections are reused last-in first-out (the most recently used is the least likely
to have been closed by the upstream) and closed after `keepalive` seconds.  TLS uses one
`ssl.create_default_context()` per client -- the system CA store (SSL_CERT_FILE / SSL_CERT_DIR
honoured), certificate and host name verified, ALPN http/1.1: the same as aiohttp's default.

A request that fails on a *reused* connection before any byte of response arrived is sent once more
on a new connection: an upstream closing an idle keep-alive connection as we write to it never read
the request.  Nothing else is retried here (the dispatcher decides about other backends).
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from collections import deque
from collections.abc import Mapping
from urllib.parse import urlsplit

from adapters.errors import ProxyError

from .dnscache import DnsCache
from .rawhttp import Connection, RawResponse
from .upstream_client import ConnectFailed, ConnectionBroken, ConnectTimeout

_DEFAULT_PORTS = {"http": 80, "https": 443}
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")  # what would break out of the request line
_BAD_NAME = re.compile(r"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")  # RFC 9110 token
_URL_CACHE_SIZE = 512
Origin = tuple[str, str, int]  # scheme, host, port


_CONTEXTS: dict[tuple[str | None, str | None], ssl.SSLContext] = {}


def default_ssl_context() -> ssl.SSLContext:
    """The verifying TLS context, one per process and trust store: loading the CA store blocks for
    ~50 ms, which every backend (and every config reload) would otherwise pay on the event loop."""
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    context = _CONTEXTS.get(key)
    if context is None:
        context = _CONTEXTS[key] = ssl.create_default_context()
        context.set_alpn_protocols(("http/1.1",))
    return context


class RawClient:
    def __init__(self, max_connections: int, connect_timeout: float, keepalive: float = 60.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._limit = max(1, max_connections)
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._ssl = ssl_context or default_ssl_context()
        self._loop = asyncio.get_running_loop()
        self._dns = DnsCache(self._loop.getaddrinfo)
        self._idle: dict[Origin, list[Connection]] = {}
        self._conns: set[Connection] = set()  # every live connection, for close()
        self._open = 0  # connections counted against the limit: busy, idle or connecting
        self._busy = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._urls: dict[str, tuple[Origin, bytes, str]] = {}
        self._closed = False
        self.opened = 0  # connections ever opened (reuse = requests - opened)

    # -- requests ---------------------------------------------------------------------------------

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                      deadline: float) -> RawResponse:
        origin, start, host = self._target(url)
        head = _head(start, host, method, headers, body)
        head_only = method == "HEAD"
        fresh = False
        while True:
            conn = await self._acquire(origin, deadline, fresh)
            resp = conn.send(head, body, head_only)
            try:
                await resp.wait_headers(deadline)
            except ConnectionBroken:
                resp.release()
                if fresh or not conn.served or resp.any_bytes:
                    raise
                fresh = True  # a stale keep-alive connection: once more, on a new one
                continue
            except BaseException:
                resp.release()
                raise
            return resp

    def _target(self, url: str) -> tuple[Origin, bytes, str]:
        """(origin, the request line after the method, the Host header line) of `url`, cached: URLs repeat."""
        hit = self._urls.get(url)
        if hit is not None:
            return hit
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname
        if scheme not in _DEFAULT_PORTS or not host:
            raise ConnectFailed(f"unsupported URL scheme {scheme[:10]!r}")
        port = parts.port or _DEFAULT_PORTS[scheme]
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        if _BAD_TARGET.search(target):
            raise ProxyError("invalid_request", "the upstream request path holds a character a URL cannot")
        host_header = f"[{host}]" if ":" in host else host
        if port != _DEFAULT_PORTS[scheme]:
            host_header += f":{port}"
        hit = ((scheme, host, port), f" {target} HTTP/1.1\r\n".encode(), f"Host: {host_header}\r\n")
        if len(self._urls) >= _URL_CACHE_SIZE:
            self._urls.clear()
        self._urls[url] = hit
        return hit

    # -- the pool ---------------------------------------------------------------------------------

    async def _acquire(self, origin: Origin, deadline: float, fresh: bool) -> Connection:
        waited = False
        while True:
            if self._closed:
                raise ConnectFailed("client closed")
            idle = None if fresh else self._idle.get(origin)
            while idle:
                conn = idle.pop()
                if conn.idle_timer is not None:
                    conn.idle_timer.cancel()
                if conn.transport is None or conn.transport.is_closing():
                    self._gone(conn)
                    continue
                conn.state = "busy"
                self._busy += 1
                return conn
            if self._open < self._limit or self._close_an_idle():
                return await self._connect(origin, deadline)
            await self._wait_turn(deadline, waited)
            waited = True

    async def _connect(self, origin: Origin, deadline: float) -> Connection:
        self._open += 1
        self._busy += 1
        scheme, host, port = origin
        tls = scheme == "https"
        loop = self._loop
        connect_by = loop.time() + self._connect_timeout
        try:
            async with asyncio.timeout_at(min(connect_by, deadline)):
                conn = await self._connect_any(origin, tls)
        except BaseException as exc:
            self._open -= 1
            self._busy -= 1
            self._wake()
            if isinstance(exc, TimeoutError):
                if connect_by <= deadline:
                    raise ConnectTimeout("connect timed out") from None
                raise
            if isinstance(exc, OSError):  # ssl.SSLError included; the texts may name the host: the caller scrubs
                reason = getattr(exc, "reason", None) or getattr(exc, "verify_message", None)
                raise ConnectFailed(f"{type(exc).__name__} (errno {exc.errno}{', ' + reason if reason else ''})") from None
            raise
        self.opened += 1
        self._conns.add(conn)
        return conn

    async def _connect_any(self, origin: Origin, tls: bool) -> Connection:
        """Connect to the host's first address that answers (cached addresses, tried in order)."""
        _, host, port = origin
        loop = self._loop
        error: OSError | None = None
        for info in await self._dns.addresses(host, port):  # never empty
            try:
                _, conn = await loop.create_connection(
                    lambda: Connection(self, origin, loop), info[4][0], info[4][1],
                    ssl=self._ssl if tls else None, server_hostname=host if tls else None)
                return conn
            except ssl.SSLError:
                raise  # the host answered: another of its addresses would present the same certificate
            except OSError as exc:
                error = exc
        self._dns.forget(host, port)  # none answered: look the host up again next time
        assert error is not None
        raise error

    async def _wait_turn(self, deadline: float, again: bool) -> None:
        """Wait in line for a free slot; one who was woken and lost the slot to a newcomer stays first."""
        waiter = self._loop.create_future()
        if again:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake()  # our turn came as we gave up: pass it on
            else:
                waiter.cancel()
            raise

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _close_an_idle(self) -> bool:
        """Free a slot held by an idle connection to another origin."""
        for conns in self._idle.values():
            if conns:
                conn = conns.pop(0)
                self._gone(conn)
                conn.abort()
                return True
        return False

    def _release(self, conn: Connection, reuse: bool) -> None:
        self._busy -= 1
        if reuse and not self._closed and conn.transport is not None and not conn.transport.is_closing():
            conn.state = "idle"
            conn.idle_timer = self._loop.call_later(self._keepalive, conn.abort)
            self._idle.setdefault(conn.origin, []).append(conn)
        else:
            conn.abort()
            self._gone(conn)
        self._wake()

    def _gone(self, conn: Connection) -> None:
        """`conn` no longer counts against the limit (closed or being closed)."""
        if conn.state != "gone":
            conn.state = "gone"
            self._open -= 1
            self._conns.discard(conn)

    def _lost(self, conn: Connection) -> None:
        """The transport closed (either side): an idle connection leaves the pool at once."""
        self._conns.discard(conn)
        if conn.state == "idle":
            idle = self._idle.get(conn.origin)
            if idle is not None and conn in idle:
                idle.remove(conn)
            self._gone(conn)
            self._wake()

    # -- the client -------------------------------------------------------------------------------

    def in_use(self) -> int:
        return self._busy

    def idle(self) -> int:
        return sum(len(conns) for conns in self._idle.values())

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._conns):
            conn.abort()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # they find the client closed
        await asyncio.sleep(0)  # let the transports call connection_lost


def _head(start: bytes, host: str, method: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
    """The request line and header block: the adapter's headers, plus what aiohttp would add (Host,
    Accept, Accept-Encoding, Content-Length, Content-Type)."""
    lines = []
    seen = set()
    names = _NAMES
    for name, value in headers.items():
        lower = names.get(name)
        if lower is None:
            lower = _check_name(name)
        if lower in _FRAMING:
            continue  # the body decides these
        seen.add(lower)
        lines.append(f"{name}: {value}\r\n")
    if "host" not in seen:
        lines.append(host)
    if "accept" not in seen:
        lines.append("Accept: */*\r\n")
    if "accept-encoding" not in seen:
        lines.append("Accept-Encoding: gzip, deflate\r\n")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n")
        if "content-type" not in seen:
            lines.append("Content-Type: application/octet-stream\r\n")
    elif method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: 0\r\n")
    block = "".join(lines)
    # One scan each instead of one per value: a value holding CR, LF or NUL would add a line.
    n = len(lines)
    if block.count("\n") != n or block.count("\r") != n or "\x00" in block:
        raise ProxyError("invalid_request", "an upstream request header holds a character HTTP does not allow")
    return b"".join((method.encode(), start, block.encode(), b"\r\n"))


_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})
_NAMES: dict[str, str] = {}  # header names seen (valid) -> lower case: adapters send the same few


def _check_name(name: str) -> str:
    if not name or _BAD_NAME.search(name):
        raise ProxyError("invalid_request", "an upstream request header name is not an HTTP token")
    if len(_NAMES) < 1024:
        _NAMES[name] = name.lower()
    return name.lower()
