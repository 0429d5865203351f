"""Sending one HttpRequest to a backend, with per-phase deadlines and errors in the closed set.

Deadlines: `connect` bounds TCP and TLS connect (enforced by the client), `first_byte` bounds
request-sent -> response headers, `idle` bounds each wait for the next body chunk, `total` bounds
the whole exchange.  The backend's client (raw or aiohttp, proxy/upstream_client.py) reports
transport failures as UpstreamError; each becomes a ProxyError whose message names only the backend
(never its URL); details go to the debug log, scrubbed.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter

from adapters.base import HttpRequest
from adapters.errors import ProxyError

from .pools import BackendRuntime
from .upstream_client import (
    BadResponse,
    BodyTooLarge,
    ConnectFailed,
    ConnectTimeout,
    UpstreamError,
    UpstreamResponse,
)

log = logging.getLogger("llm_proxy.upstream")


class Exchange:
    """One open upstream response and its deadlines."""

    __slots__ = ("backend", "response", "t_sent", "deadline", "idle", "finished", "_loop")

    def __init__(self, backend: BackendRuntime, response: UpstreamResponse, t_sent: float, deadline: float):
        self.backend = backend
        self.response = response
        self.t_sent = t_sent
        self.deadline = deadline  # loop.time() by which the whole exchange must end
        self.idle = backend.config.timeouts.idle
        self.finished = False
        self._loop = asyncio.get_running_loop()

    @property
    def status(self) -> int:
        return self.response.status

    async def read(self) -> bytes:
        """The whole body (non-streaming responses)."""
        try:
            return await self.response.read(self.deadline, self.backend.max_body)
        except TimeoutError:
            raise _timeout(self.backend, "total") from None
        except UpstreamError as exc:
            raise _failed(self.backend, exc, "body read failed", "broke the connection") from None

    async def next_chunk(self) -> bytes:
        """The body bytes that arrived since the last call, as the client got them (b"" at the end);
        raises ProxyError on idle timeout or a broken connection.  A plain coroutine, not an async
        generator: it runs once per relayed chunk."""
        try:
            return await self.response.chunk(min(self._loop.time() + self.idle, self.deadline))
        except TimeoutError:
            raise _timeout(self.backend, "idle" if self._loop.time() < self.deadline else "total") from None
        except UpstreamError as exc:
            raise _failed(self.backend, exc, "stream broke", "closed the stream unexpectedly") from None

    def finish(self) -> float:
        """End the exchange (once): the connection goes back to the pool when the body was read to the
        end, else it is closed (cancelled or failed mid-body).  Returns the seconds the upstream took."""
        if self.finished:
            return 0.0
        self.finished = True
        self.response.release()
        return perf_counter() - self.t_sent


def _failed(backend: BackendRuntime, exc: UpstreamError, what: str, says: str) -> ProxyError:
    if isinstance(exc, BodyTooLarge):  # an operator's limit was hit, not a fault: worth a warning
        log.warning("backend %s: %s: response body over server.max_upstream_body_bytes (%d): connection closed",
                    backend.name, what, backend.max_body)
        return ProxyError("upstream_protocol", f"backend {backend.name!r} sent a response body larger than "
                          f"the gateway accepts ({backend.max_body} bytes)")
    log.debug("backend %s: %s: %s: %s", backend.name, what, type(exc).__name__, backend.scrub_text(exc.detail))
    if isinstance(exc, BadResponse):
        return ProxyError("upstream_protocol", f"backend {backend.name!r} sent a malformed response")
    if isinstance(exc, ConnectFailed):
        return ProxyError("upstream_unavailable", f"could not connect to backend {backend.name!r}")
    return ProxyError("upstream_unavailable", f"backend {backend.name!r} {says}")


def _timeout(backend: BackendRuntime, phase: str) -> ProxyError:
    t = backend.config.timeouts
    limit = {"connect": t.connect, "first_byte": t.first_byte, "idle": t.idle, "total": t.total}[phase]
    return ProxyError("timeout", f"backend {backend.name!r} timed out ({phase.replace('_', ' ')} after {limit:g}s)")


async def send(backend: BackendRuntime, http: HttpRequest, extra_headers: dict[str, str] | None = None) -> Exchange:
    """Send `http` and wait for the response headers.  The caller owns the returned Exchange."""
    client = backend.client
    if client is None:
        raise ProxyError("upstream_unavailable", f"backend {backend.name!r} is not ready")
    if backend.auth is not None:
        await backend.auth.apply(http)  # every attempt: a fresh signature / a current token
    t = backend.config.timeouts
    now = asyncio.get_running_loop().time()
    deadline = now + t.total
    headers = http.headers if not extra_headers else {**http.headers, **extra_headers}
    t_sent = perf_counter()
    try:
        # Redirects are not followed (by either client): they would re-send custom credential headers
        # (api-key, x-api-key, x-goog-api-key) to wherever the Location points.
        response = await client.request(http.method, http.url, headers, http.body, min(now + t.first_byte, deadline))
    except TimeoutError:
        raise _timeout(backend, "first_byte") from None
    except ConnectTimeout:
        raise _timeout(backend, "connect") from None
    except UpstreamError as exc:
        what = "connect failed" if isinstance(exc, ConnectFailed) else "request failed"
        raise _failed(backend, exc, what, "closed the connection") from None
    if response.status == 401 and backend.auth is not None:
        backend.auth.rejected(http)  # e.g. a revoked OAuth token: the next attempt fetches a new one
    if 300 <= response.status < 400:
        response.release()  # the body is not read: the connection is closed
        raise ProxyError("upstream_protocol", f"backend {backend.name!r} answered a redirect, which is not followed")
    return Exchange(backend, response, t_sent, deadline)
