"""Sending one HttpRequest to a backend, with per-phase deadlines and errors in the closed set.

Deadlines: `first_byte` bounds request-sent -> response headers, `idle` bounds each wait for the next
body chunk, `total` bounds the whole exchange; `connect` is enforced by the pool's session.  Every
transport failure becomes a ProxyError whose message names only the backend (never its URL, which
aiohttp's own exception texts contain); details go to the debug log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from time import perf_counter

import aiohttp
from yarl import URL

from adapters.base import HttpRequest
from adapters.errors import ProxyError

from .pools import BackendRuntime

log = logging.getLogger("llm_proxy.upstream")


class Exchange:
    """One open upstream response and its deadlines."""

    __slots__ = ("backend", "response", "t_sent", "deadline", "idle", "finished")

    def __init__(self, backend: BackendRuntime, response: aiohttp.ClientResponse, t_sent: float, deadline: float):
        self.backend = backend
        self.response = response
        self.t_sent = t_sent
        self.deadline = deadline  # loop.time() by which the whole exchange must end
        self.idle = backend.config.timeouts.idle
        self.finished = False

    @property
    def status(self) -> int:
        return self.response.status

    async def read(self) -> bytes:
        """The whole body (non-streaming responses)."""
        try:
            async with asyncio.timeout_at(self.deadline):
                return await self.response.read()
        except TimeoutError:
            raise _timeout(self.backend, "total") from None
        except aiohttp.ClientError as exc:
            log.debug("backend %s: body read failed: %s", self.backend.name, _describe(self.backend, exc))
            raise ProxyError("upstream_unavailable", f"backend {self.backend.name!r} broke the connection") from None

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; raises ProxyError on idle timeout or a broken connection."""
        content = self.response.content
        loop = asyncio.get_running_loop()
        idle, deadline = self.idle, self.deadline
        while True:
            try:
                async with asyncio.timeout_at(min(loop.time() + idle, deadline)):
                    chunk = await content.readany()
            except TimeoutError:
                raise _timeout(self.backend, "idle" if loop.time() < deadline else "total") from None
            except aiohttp.ClientError as exc:
                log.debug("backend %s: stream broke: %s", self.backend.name, _describe(self.backend, exc))
                raise ProxyError(
                    "upstream_unavailable", f"backend {self.backend.name!r} closed the stream unexpectedly"
                ) from None
            if not chunk:
                return
            yield chunk

    def finish(self) -> float:
        """End the exchange (once): return the connection to the pool when the body was read to the
        end, else drop it (cancelled or failed mid-body).  Returns the seconds the upstream took."""
        if self.finished:
            return 0.0
        self.finished = True
        elapsed = perf_counter() - self.t_sent
        response = self.response
        if not response.closed:  # aiohttp has already released it when read() completed
            if response.content.is_eof():
                response.release()
            else:
                response.close()
        return elapsed


def _describe(backend: BackendRuntime, exc: BaseException) -> str:
    """An aiohttp exception for the debug log, without the host, port and URL its text names."""
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError):  # connector errors: "Cannot connect to host h:p ... ('h', p)"
        return f"{type(exc).__name__} ({type(os_error).__name__}, errno {os_error.errno})"
    return f"{type(exc).__name__}: {backend.scrub_text(str(exc))}"


def _timeout(backend: BackendRuntime, phase: str) -> ProxyError:
    t = backend.config.timeouts
    limit = {"connect": t.connect, "first_byte": t.first_byte, "idle": t.idle, "total": t.total}[phase]
    return ProxyError("timeout", f"backend {backend.name!r} timed out ({phase.replace('_', ' ')} after {limit:g}s)")


async def send(backend: BackendRuntime, http: HttpRequest, extra_headers: dict[str, str] | None = None) -> Exchange:
    """Send `http` and wait for the response headers.  The caller owns the returned Exchange."""
    session = backend.session
    if session is None:
        raise ProxyError("upstream_unavailable", f"backend {backend.name!r} is not ready")
    url: str | URL = http.url
    if backend.auth is not None:
        await backend.auth.apply(http)  # every attempt: a fresh signature / a current token
        # A signature covers the exact path bytes: keep yarl from re-quoting them (`%3A` -> `:`).
        url = URL(http.url, encoded=True)
    t = backend.config.timeouts
    loop = asyncio.get_running_loop()
    now = loop.time()
    deadline = now + t.total
    headers = http.headers if not extra_headers else {**http.headers, **extra_headers}
    t_sent = perf_counter()
    try:
        async with asyncio.timeout_at(min(now + t.first_byte, deadline)):
            # Redirects are not followed: aiohttp would re-send custom credential headers (api-key,
            # x-api-key, x-goog-api-key) to wherever the Location points.
            response = await session.request(http.method, url, data=http.body, headers=headers,
                                             allow_redirects=False)
    except aiohttp.ServerTimeoutError:  # raised by the session's sock_connect limit
        raise _timeout(backend, "connect") from None
    except TimeoutError:
        raise _timeout(backend, "first_byte") from None
    except aiohttp.ClientConnectorError as exc:
        log.debug("backend %s: connect failed: %s", backend.name, _describe(backend, exc))
        raise ProxyError("upstream_unavailable", f"could not connect to backend {backend.name!r}") from None
    except aiohttp.ClientError as exc:
        log.debug("backend %s: request failed: %s", backend.name, _describe(backend, exc))
        raise ProxyError("upstream_unavailable", f"backend {backend.name!r} closed the connection") from None
    if response.status == 401 and backend.auth is not None:
        backend.auth.rejected(http)  # e.g. a revoked OAuth token: the next attempt fetches a new one
    if 300 <= response.status < 400:
        response.close()
        raise ProxyError("upstream_protocol", f"backend {backend.name!r} answered a redirect, which is not followed")
    return Exchange(backend, response, t_sent, deadline)
