"""One upstream client (and so one connection pool) per backend.

Clients are created when the app starts (inside `cleanup_ctx`, so on the worker's own event loop) and
closed on shutdown.  Keep-alive and `max_connections` are per backend, so one slow or saturated
backend cannot starve another's connections.  `http_client` chooses the client: `raw` (the default,
proxy/rawpool.py) or `aiohttp` (aiohttp's ClientSession, which also follows HTTP(S)_PROXY).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from adapters import registry
from adapters.base import Backend
from adapters.errors import ProxyError

from . import upstream_auth
from .config import MAX_UPSTREAM_BODY_BYTES, BackendConfig, Config, ConfigError
from .load import ServerLoad, signal_names
from .rawpool import RawClient
from .upstream_client import AiohttpClient, UpstreamClient

# A credential an upstream quotes masked (OpenAI: "Incorrect API key provided: sk-abc*****6789").
_MASKED = re.compile(r"[\w.\-]*\*{3,}[\w.\-]*")
_MASKED_BYTES = re.compile(_MASKED.pattern.encode())


class BackendRuntime:
    """A configured backend: its adapter (built once) and, once the app runs, its HTTP client."""

    __slots__ = ("name", "adapter", "config", "client", "family", "provider", "auth", "load", "max_body", "_secrets",
                 "_mark")

    def __init__(self, name: str, config: BackendConfig, options, max_body: int = MAX_UPSTREAM_BODY_BYTES) -> None:
        cls = registry.provider_class(config.provider)
        self.name = name
        self.config = config
        self.provider = config.provider
        try:
            self.adapter: Backend = cls(config.base_url or "", config.api_key, config.headers, options)
        except ValueError as exc:  # an adapter refusing its options (e.g. an unknown preset)
            raise ConfigError(f"backends.{name}: {exc}") from None
        self.family: str | None = self.adapter.family
        self.auth = upstream_auth.build(name, self.adapter)  # signing / token step, or None
        self.client: UpstreamClient | None = None
        self.max_body = max_body  # server.max_upstream_body_bytes: the most a read-all answer may hold
        self.load: ServerLoad | None = self._server_load(name, config)
        # What must never reach a client or a log in an upstream's error text, longest first: its URL,
        # host with and without port, key and configured header values (often credentials too).
        base = self.adapter.base_url
        parts = urlsplit(base)
        secrets = {base, parts.netloc, parts.hostname or "", config.api_key or "", *config.headers.values(),
                   *getattr(self.auth, "secrets", ())}  # credentials an auth step was configured with
        self._secrets = sorted((x for x in secrets if x and len(x) >= 4), key=len, reverse=True)
        self._mark = f"<backend {name}>"

    def scrub_text(self, text: str) -> str:
        """`text` without this backend's URL, host or credentials, nor anything masked like a key."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, self._mark)
        return _MASKED.sub("<redacted>", text) if "***" in text else text

    def _server_load(self, name: str, config: BackendConfig) -> ServerLoad | None:
        if config.load is None:
            return None
        names = signal_names(self.adapter.load_metrics, config.load)
        if not names.waiting and not names.running:
            raise ConfigError(
                f"backends.{name}.load.metrics: provider {config.provider!r} has no known load gauges; name them "
                "(load.metrics: {waiting: ..., running: ..., kv_cache: ...})")
        return ServerLoad(name, config.load, names)

    def scrub_bytes(self, data: bytes) -> bytes:
        """The same for an upstream event relayed as bytes (pass-through error events)."""
        for secret in self._secrets:
            raw = secret.encode()
            if raw in data:
                data = data.replace(raw, self._mark.encode())
        return _MASKED_BYTES.sub(b"<redacted>", data) if b"***" in data else data

    def scrub(self, err: ProxyError) -> ProxyError:
        """Scrub every text field of an error this backend produced (the upstream chose them all)."""
        err.message = self.scrub_text(err.message)
        if err.code:
            err.code = self.scrub_text(err.code)
        if err.param:
            err.param = self.scrub_text(err.param)
        return err

    def open(self) -> None:
        cfg = self.config
        if cfg.http_client == "aiohttp":
            self.client = AiohttpClient(cfg.max_connections, cfg.timeouts.connect)
        else:
            self.client = RawClient(cfg.max_connections, cfg.timeouts.connect)
        if self.load is not None:
            self.load.start()

    async def close(self) -> None:
        if self.load is not None:
            await self.load.close()
        if self.client is not None:
            await self.client.close()
            self.client = None


def build_backends(cfg: Config) -> dict[str, BackendRuntime]:
    limit = cfg.server.max_upstream_body_bytes
    return {name: BackendRuntime(name, bc, cfg.backend_options.get(name), limit) for name, bc in cfg.backends.items()}
