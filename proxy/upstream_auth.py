"""Per-backend auth steps: credentials that need I/O or crypto, applied to each upstream request.

An adapter whose provider signs requests (AWS SigV4) or needs a fetched, refreshed token (Google
OAuth) declares `Backend.auth_scheme`; it still builds the whole HttpRequest.  At start-up the proxy
builds one step per such backend (`build`), and `upstream.send` awaits `step.apply(http)` just
before every attempt (retries included), which adds the auth headers to `http.headers`.

A scheme's module is imported only when a config uses it, so its library is an optional extra; a
missing extra is a start-up error naming the `pip install` that fixes it.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from adapters.base import Backend, HttpRequest

from .config import ConfigError


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
