"""Per-backend auth steps: credentials that need I/O or crypto, applied to each upstream request.

An adapter whose provider signs requests (AWS SigV4) or needs a fetched, refreshed token (Google
OAuth) declares `Backend.auth_scheme`; it still builds the whole HttpRequest.  At start-up the proxy
builds one step per such backend (`build`), and `upstream.send` awaits `step.apply(http)` just
before every attempt (retries included), which adds the auth headers to `http.headers`.

A scheme's module is imported only when a config uses it, so its library is an optional extra; a
missing extra is a start-up error naming the `pip install` that fixes it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from adapters.base import Backend, HttpRequest
from adapters.errors import ProxyError

from .config import ConfigError

log = logging.getLogger("llm_proxy.auth")

CREDENTIALS_TIMEOUT = 15.0  # seconds a request waits for credentials (and a token endpoint's HTTP timeout)
T = TypeVar("T")


class AuthStep(Protocol):
    """Built once per backend as `cls(name, adapter)` (reading `adapter.options`), without I/O.
    May list `secrets` (configured credentials) that the proxy scrubs from upstream error texts."""

    async def apply(self, req: HttpRequest) -> None:
        """Add the auth headers to `req.headers`; raise ProxyError when no credential can be had."""
        ...

    def rejected(self, req: HttpRequest) -> None:
        """The upstream answered 401 to `req` (as `apply` left it): drop a cached credential that may
        have been revoked, so the next request fetches a fresh one."""
        ...


class BlockingRefresh(Generic[T]):
    """A credential library's blocking call (resolving a chain, refreshing a token: network I/O) run in
    a worker thread, at most one at a time per backend; every request that needs it awaits that one
    call, bounded by CREDENTIALS_TIMEOUT.  The library's own failures (`errors`) are logged and become
    `upstream_unavailable` naming `what` was being fetched, never the library's text."""

    __slots__ = ("_name", "_what", "_call", "_errors", "_pending")

    def __init__(self, name: str, what: str, call: Callable[[], T],
                 errors: tuple[type[BaseException], ...]) -> None:
        self._name, self._what, self._call, self._errors = name, what, call, errors
        self._pending: asyncio.Future[T] | None = None

    def start(self) -> asyncio.Future[T]:
        """The call under way, started if none is: also for a background refresh nobody awaits."""
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(asyncio.to_thread(self._call))
            # A background refresh nobody awaits must not log "exception never retrieved".
            self._pending.add_done_callback(lambda f: f.cancelled() or f.exception())
        return self._pending

    def running(self) -> asyncio.Future[T] | None:
        """The last call started (done or not), None before the first."""
        return self._pending

    async def wait(self) -> T:
        pending = self.start()
        try:
            async with asyncio.timeout(CREDENTIALS_TIMEOUT):
                return await asyncio.shield(pending)
        except TimeoutError:
            raise ProxyError("upstream_unavailable", f"backend {self._name!r}: timed out getting {self._what}") from None
        except self._errors as exc:
            log.warning("backend %s: getting %s failed: %s", self._name, self._what, exc)
            raise ProxyError("upstream_unavailable", f"backend {self._name!r}: could not get {self._what}") from None


# scheme -> (import path of the step class, the optional extra its library comes from)
SCHEMES: dict[str, tuple[str, str]] = {
    "aws-sigv4": ("proxy.auth_aws:SigV4Step", "bedrock"),
    "google-oauth": ("proxy.auth_google:GoogleOAuthStep", "vertex"),
}


def build(name: str, adapter: Backend) -> AuthStep | None:
    """The auth step of backend `name`, or None when its adapter needs none."""
    scheme = adapter.auth_scheme
    if scheme is None:
        return None
    path, extra = SCHEMES[scheme]
    module, _, cls_name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except ImportError as exc:
        raise ConfigError(
            f"backends.{name}: provider {adapter.provider} needs: pip install -e '.[{extra}]' ({exc.name} is missing)"
        ) from None
    return cls(name, adapter)
