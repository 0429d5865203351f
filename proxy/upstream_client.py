"""The upstream HTTP client interface, its closed set of errors, and the aiohttp implementation.

Two clients implement it (chosen per backend by `http_client`): the raw asyncio HTTP/1.1 client
(proxy/rawpool.py, the default) and aiohttp's ClientSession (this module), the fallback for what the
raw one does not do: HTTP(S)_PROXY / NO_PROXY from the environment.  proxy/upstream.py drives either
through the same calls, so the relay has one path:

    response = await client.request(method, url, headers, body, deadline)   # headers received
    response.status, response.headers["Retry-After"]                          # case-insensitive
    await response.chunk(deadline) -> bytes (b"" at the end)  |  await response.read(deadline, limit)
    response.release()   # keep-alive when the body was read to its end, else the connection is closed

`deadline` is a loop.time(); past it the call raises TimeoutError.  `read` buffers the whole body, so
it is bounded: past `limit` bytes (announced by Content-Length, or decoded so far) it raises
BodyTooLarge and the connection is closed, never pooled.  Transport failures raise an
UpstreamError subclass whose `detail` is for the debug log only (it may name the host: the caller
scrubs it).  Redirects are never followed: a 3xx is returned like any other status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol
from urllib.request import getproxies_environment, proxy_bypass_environment

import aiohttp
from yarl import URL


class UpstreamError(Exception):
    """A transport failure; `detail` says what, for the debug log."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConnectFailed(UpstreamError):
    """No connection: DNS, refused, unreachable, TLS handshake or certificate."""


class ConnectTimeout(UpstreamError):
    """The connect step (TCP and TLS) took longer than `timeouts.connect`."""


class ConnectionBroken(UpstreamError):
    """The connection closed or reset before the response (or its body) was complete."""


class BadResponse(UpstreamError):
    """The upstream's bytes are not a valid HTTP/1.1 response (or exceed a bound, e.g. header size)."""


class BodyTooLarge(BadResponse):
    """A body read whole (not streamed) is larger than the caller's limit."""


def too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"response body over {limit} bytes")


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]  # case-insensitive names

    async def chunk(self, deadline: float) -> bytes: ...

    async def read(self, deadline: float, limit: int) -> bytes: ...

    def release(self) -> None: ...


class UpstreamClient(Protocol):
    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                      deadline: float) -> UpstreamResponse: ...

    def in_use(self) -> int:
        """Connections checked out (a request or a response body in progress)."""
        ...

    async def close(self) -> None: ...


# --------------------------------------------------------------------------------------------------
# aiohttp


class AiohttpResponse:
    __slots__ = ("_response", "status", "headers")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers

    async def chunk(self, deadline: float) -> bytes:
        try:
            async with asyncio.timeout_at(deadline):
                return await self._response.content.readany()
        except aiohttp.ClientError as exc:
            raise ConnectionBroken(f"{type(exc).__name__}: {exc}") from None

    async def read(self, deadline: float, limit: int) -> bytes:
        response = self._response
        if (response.content_length or 0) > limit:
            raise self._refuse(limit)
        parts: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout_at(deadline):
                while chunk := await response.content.readany():
                    size += len(chunk)  # decoded bytes: a small gzip body cannot inflate past the bound
                    if size > limit:
                        raise self._refuse(limit)
                    parts.append(chunk)
        except aiohttp.ClientError as exc:
            raise ConnectionBroken(f"{type(exc).__name__}: {exc}") from None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _refuse(self, limit: int) -> BodyTooLarge:
        self._response.close()  # the rest of the body is not read: the connection cannot be reused
        return too_large(limit)

    def release(self) -> None:
        response = self._response
        if not response.closed:  # aiohttp has already released it when read() completed
            if response.content.is_eof():
                response.release()
            else:
                response.close()


class AiohttpClient:
    """aiohttp's ClientSession with its own TCPConnector (`max_connections`, keep-alive, DNS cache),
    sending through the proxy HTTP_PROXY / HTTPS_PROXY name for the URL's scheme unless NO_PROXY
    exempts its host.  The environment is read once, here; not aiohttp's `trust_env`, which reads it
    (and ~/.netrc, whose credentials it would send) on every request: ~250 µs each on our bench VM."""

    def __init__(self, max_connections: int, connect_timeout: float) -> None:
        self._proxies = getproxies_environment()
        self._proxy_for: dict[tuple[str, str], str | None] = {}
        connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, ttl_dns_cache=300,
                                         keepalive_timeout=60, enable_cleanup_closed=False)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Per-phase deadlines come with each call; the session only bounds the connect step.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
            auto_decompress=True, skip_auto_headers=("User-Agent",), raise_for_status=False)

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                      deadline: float) -> AiohttpResponse:
        target = URL(url, encoded=True)  # a signature covers the exact path bytes: no re-quoting
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._session.request(method, target, data=body, headers=headers,
                                                       allow_redirects=False, proxy=self._proxy(target))
        except aiohttp.ServerTimeoutError:  # the session's sock_connect limit
            raise ConnectTimeout("connect timed out") from None
        except aiohttp.ClientConnectorError as exc:
            os_error = exc.os_error  # its text names host and port: keep the type and errno only
            raise ConnectFailed(f"{type(exc).__name__} ({type(os_error).__name__}, errno {os_error.errno})") from None
        except aiohttp.ClientError as exc:
            raise ConnectionBroken(f"{type(exc).__name__}: {exc}") from None
        return AiohttpResponse(response)

    def _proxy(self, url: URL) -> str | None:
        key = (url.scheme, url.host or "")
        if key in self._proxy_for:
            return self._proxy_for[key]
        proxy = self._proxies.get(url.scheme)
        if proxy and proxy_bypass_environment(key[1], self._proxies):
            proxy = None
        if len(self._proxy_for) < 256:  # backends talk to a few hosts
            self._proxy_for[key] = proxy
        return proxy

    def in_use(self) -> int:
        connector = self._session.connector
        return len(connector._acquired) if connector is not None else 0

    async def close(self) -> None:
        await self._session.close()
